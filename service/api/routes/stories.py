"""GET /v1/stories/{id}/digest: the story's current digest, the page editors open."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from schemas import DigestView
from service.api.deps import ReaderDep, SessionDep
from service.api.pages import browser_login, choose_format, render_digest
from service.api.problems import problem_responses
from service.api.routes.digests import RENDERINGS
from service.api.routes.params import FormatOverride
from service.errors import NotFoundError
from service.store import digests

router = APIRouter(prefix="/stories", tags=["stories"])


@router.get("/{story_id}/digest", response_model=DigestView, responses={**RENDERINGS, **problem_responses(401, 404)})
async def current_digest(story_id: str, request: Request, caller: ReaderDep, session: SessionDep,
                         format: FormatOverride = None) -> Response:
    """The story's current digest: JSON, or Markdown or HTML by `Accept` or `?format=md|html`.

    A browser may open `?format=html&api_key=<key>` once: the key moves into a cookie.
    """
    if (login := browser_login(request)) is not None:
        return login
    record = await digests.current_for_story(session=session, story_id=story_id)
    if record is None:
        raise NotFoundError(f"story {story_id} has no digest yet: POST /v1/digests with its story_id")
    return render_digest(record, choose_format(request, format))
