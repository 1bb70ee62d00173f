"""POST /v1/digests (queue a story's digest) and GET /v1/digests/{id} (JSON, Markdown or HTML)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import DigestRequest, DigestView, JobAccepted
from service.api.deps import ApiKeyDep, QueueDep, ReaderDep, RegistryDep, SessionDep, SessionsDep
from service.api.idempotency import fingerprint, idempotent
from service.api.pages import browser_login, choose_format, render_digest
from service.api.problems import problem_responses
from service.api.routes.params import (
    LOCATION,
    REPLAYED,
    RETRY_AFTER,
    FormatOverride,
    IdempotencyKey,
    Pins,
    Wait,
)
from service.api.views import BUILD_DIGEST, accepted, digest_dedupe_key, digest_view, find_article, job_url
from service.errors import InputError, NotFoundError
from service.store import articles, digests, jobs
from service.store.articles import ArticleRecord
from service.store.models import new_id

router = APIRouter(prefix="/digests", tags=["digests"])

RENDERINGS: dict[int | str, dict[str, Any]] = {
    200: {"description": "The digest.", "content": {"text/markdown": {}, "text/html": {}}},
}


async def _articles_for(session: AsyncSession, body: DigestRequest) -> list[ArticleRecord]:
    """The requested articles in order, each once; 422 naming every id that is unknown, or that belongs to
    another story than the ``story_id`` asked for (that digest would become the story's current one)."""
    if body.article_ids:
        found = [await find_article(session, ident) for ident in body.article_ids]
        unknown = [i for i, r in zip(body.article_ids, found, strict=True) if r is None or r.deleted]
        if unknown:
            raise InputError(f"unknown article id(s): {', '.join(unknown)}", article_ids=unknown)
        records = [r for r in found if r is not None]
        if body.story_id is not None:
            strangers = [i for i, r in zip(body.article_ids, records, strict=True) if r.story_id != body.story_id]
            if strangers:
                raise InputError(f"article id(s) not in story {body.story_id}: {', '.join(strangers)}",
                                 article_ids=strangers, story_id=body.story_id)
    else:
        assert body.story_id is not None
        records = await articles.list_by_story(session=session, story_id=body.story_id)
        if not records:
            raise InputError(f"story {body.story_id} has no articles", story_id=body.story_id)
    return list({r.id: r for r in records}.values())


@router.post(
    "", status_code=202, response_model=JobAccepted,
    responses={200: {"model": DigestView, "description": "Built within `wait` seconds.", "headers": REPLAYED},
               202: {"description": "Queued: poll `job_url`.", "headers": {**LOCATION, **REPLAYED}},
               **problem_responses(400, 401, 409, 413, 415, 422)},
)
async def request_digest(body: DigestRequest, request: Request, caller: ApiKeyDep, registry: RegistryDep,
                         queue: QueueDep, sessions: SessionsDep, wait: Wait = 0,
                         prompt: Pins = [],  # noqa: B006 (FastAPI copies query defaults)
                         idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Queue one cited digest of the given articles, or of every live article of a story.

    With a `story_id` the digest becomes the story's current one, so any `article_ids` sent with it
    must belong to that story (422 naming those that do not). Articles not analysed yet are
    analysed first; analyses and digests already built from the same inputs are reused.
    """
    registry.resolve(prompt)
    async with sessions() as session:
        records = await _articles_for(session, body)
    request_hash = fingerprint(request, body.model_dump(mode="json"), prompt)

    async def handle() -> JSONResponse:
        digest_id = new_id()
        payload = {"digest_id": digest_id, "article_ids": [r.id for r in records], "story_id": body.story_id,
                   "pins": prompt}
        async with sessions() as own, own.begin():
            job = await queue.submit(BUILD_DIGEST, payload, dedupe_key=digest_dedupe_key(digest_id), session=own)
        if wait:  # without holding a connection, as for articles
            job = await queue.wait(job.id, wait) or job
        if job.status == "succeeded":
            async with sessions() as own:
                record = await digests.get_digest(session=own, digest_id=digest_id)
            if record is not None:
                return JSONResponse(digest_view(record).model_dump(mode="json"), status_code=200)
        return JSONResponse(accepted(job, digest_id=digest_id).model_dump(mode="json"), status_code=202,
                            headers={"Location": job_url(job.id)})

    return await idempotent(request, caller, sessions, request_hash, handle)


@router.get(
    "/{digest_id}", response_model=DigestView,
    responses={**RENDERINGS, 202: {"model": JobAccepted, "description": "Not built yet.",
                                   "headers": {**LOCATION, **RETRY_AFTER}},
               **problem_responses(401, 404)},
)
async def read(digest_id: str, request: Request, caller: ReaderDep, session: SessionDep,
               format: FormatOverride = None) -> Response:
    """A digest as JSON, or as Markdown or the editor's HTML page (`Accept`, or `?format=`).

    While it is being built: 202 with its job. A browser may add `?api_key=` once (see the
    `newsdigest_key` cookie).
    """
    if (login := browser_login(request)) is not None:
        return login
    record = await digests.get_digest(session=session, digest_id=digest_id)
    if record is not None:
        return render_digest(record, choose_format(request, format))
    job = await jobs.latest_by_dedupe_key(session=session, dedupe_key=digest_dedupe_key(digest_id))
    if job is None:
        raise NotFoundError(f"no digest {digest_id}")
    if job.status == "failed":
        raise NotFoundError(f"digest {digest_id} was not built: {job.error}", job_id=job.id)
    body = accepted(job, digest_id=digest_id).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers={"Location": job_url(job.id), "Retry-After": "2"})
