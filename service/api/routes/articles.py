"""POST /v1/articles (store and queue the analysis) and GET /v1/articles/{id} (facts, sentiment)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from schemas import ArticleIn, ArticleView, JobAccepted
from service.api.deps import ApiKeyDep, QueueDep, RegistryDep, SessionDep, SessionsDep, SettingsDep
from service.api.idempotency import fingerprint, idempotent
from service.api.problems import problem_responses
from service.api.routes.params import LOCATION, REPLAYED, IdempotencyKey, Pins, Wait
from service.api.views import ANALYZE, accepted, analyze_dedupe_key, article_view, find_article, job_url
from service.errors import NotFoundError
from service.pipeline.text import prepare
from service.store import articles

router = APIRouter(prefix="/articles", tags=["articles"])


@router.post(
    "", status_code=202, response_model=JobAccepted,
    responses={200: {"model": ArticleView, "description": "Analysed within `wait` seconds.", "headers": REPLAYED},
               202: {"description": "Queued: poll `job_url`.", "headers": {**LOCATION, **REPLAYED}},
               **problem_responses(400, 401, 409, 413, 415, 422)},
)
async def submit(article: ArticleIn, request: Request, caller: ApiKeyDep, settings: SettingsDep,
                 registry: RegistryDep, queue: QueueDep, sessions: SessionsDep, wait: Wait = 0,
                 prompt: Pins = [],  # noqa: B006 (FastAPI copies query defaults)
                 idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Store an article from the CMS and queue its analysis (key facts and sentiment).

    An article with the CMS's `id` is updated in place; a changed text is analysed again, an
    unchanged one is served from the cache without a model call. Nothing is stored when the
    article cannot be used (no readable text, too long, unknown prompt pin).
    """
    registry.resolve(prompt)  # an unknown pin is refused before anything is written
    prepared = prepare(article, max_chars=settings.max_article_chars)
    request_hash = fingerprint(request, article.model_dump(mode="json"), prompt)

    async def handle() -> JSONResponse:
        async with sessions() as session, session.begin():
            record = await articles.save_article(session=session, prepared=prepared)
            job = await queue.submit(ANALYZE, {"article_id": record.id, "pins": prompt},
                                     dedupe_key=analyze_dedupe_key(record, prompt), session=session)
        # No connection is held while waiting: sixty waiting requests must not drain the pool.
        if wait:
            job = await queue.wait(job.id, wait) or job
        if job.done:
            async with sessions() as session:
                view = await article_view(session, record, job)
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
