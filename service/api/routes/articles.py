"""POST /v1/articles (store and queue the analysis) and GET /v1/articles/{id} (facts, sentiment).

The intake does only what costs microseconds (``service.api.intake``) and one transaction; the
article is prepared by its analysis job, so no article holds the event loop.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from schemas import ArticleIn, ArticleView, JobAccepted
from service.api.deps import ApiKeyDep, SessionDep
from service.api.idempotency import HEADER, fingerprint, idempotent
from service.api.intake import ArticleArrival, IntakeDep, check_article
from service.api.problems import problem_responses
from service.api.routes.params import LOCATION, REPLAYED, IdempotencyKey, Pins, Wait
from service.api.views import accepted, article_view, find_article, job_url
from service.errors import NotFoundError
from service.store import articles

router = APIRouter(prefix="/articles", tags=["articles"])


@router.post(
    "", status_code=202, response_model=JobAccepted,
    responses={200: {"model": ArticleView, "description": "Analysed within `wait` seconds.", "headers": REPLAYED},
               202: {"description": "Queued: poll `job_url`.", "headers": {**LOCATION, **REPLAYED}},
               **problem_responses(400, 401, 409, 413, 415, 422)},
)
async def submit(article: ArticleIn, request: Request, caller: ApiKeyDep, intake: IntakeDep, wait: Wait = 0,
                 prompt: Pins = [],  # noqa: B006 (FastAPI copies query defaults)
                 idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Store an article from the CMS and queue its analysis (key facts and sentiment).

    An article with the CMS's `id` is updated in place; a changed text is analysed again, an
    unchanged one is served from the cache without a model call. Refused with nothing stored: a
    body over the size limit (413), a body without a letter or digit (422), an unknown prompt pin.
    The text is prepared by the analysis job: an article whose markup holds no readable sentence
    is a failed job, its reason in `GET /v1/articles/{id}` (`status` failed, `error`).
    """
    settings, queue, sessions = intake.settings, intake.queue, intake.sessions
    intake.registry.resolve(prompt)  # an unknown pin is refused before anything is written
    check_article(article, max_chars=settings.max_article_chars)
    # Only an Idempotency-Key needs the request's fingerprint (the body serialised again and hashed).
    request_hash = fingerprint(request, article.model_dump(mode="json"), prompt) if HEADER in request.headers else ""

    async def handle() -> JSONResponse:
        arrived = await intake.writer.write(ArticleArrival(article, queue, settings, pins=prompt))
        record, job = arrived.record, arrived.analysis
        assert record is not None and job is not None  # no delivery to be a duplicate of
        # No connection is held while waiting: sixty waiting requests must not drain the pool.
        if wait:
            job = await queue.wait(job.id, wait) or job
        if job.done:
            async with sessions() as session:
                # As the job left it: prepared (or found unusable) since it was stored above.
                current = await articles.get_article(session=session, article_id=record.id)
                if current is None:  # deleted meanwhile by its CMS id
                    raise NotFoundError(f"no article {record.id}")
                view = await article_view(session, current, job)
            return JSONResponse(view.model_dump(mode="json"), status_code=200)
        body = accepted(job, article_id=record.id).model_dump(mode="json")
        return JSONResponse(body, status_code=202, headers={"Location": job_url(job.id)})

    return await idempotent(request, caller, sessions, request_hash, handle)


@router.get("/{article_id}", response_model=ArticleView, responses=problem_responses(401, 404))
async def read(article_id: str, caller: ApiKeyDep, session: SessionDep) -> ArticleView:
    """An article's verified facts, sentiment and provenance, or where its analysis stands.

    `article_id` is ours or the CMS's own id.
    """
    record = await find_article(session, article_id)
    if record is None or record.deleted:
        raise NotFoundError(f"no article {article_id}")
    return await article_view(session, record)
