"""Living story digests: refresh a story's digest when its articles change, then tell the CMS.

``refresh_story`` runs once per burst of CMS events, not once per event: the webhook route queues
it under the dedupe key ``refresh:<story_id>`` with a short delay, so events arriving meanwhile join
the queued job (``service.store.jobs.enqueue`` coalesces on queued jobs only). An event that comes
while a refresh runs queues one more, because the running one may have read the story too early.
Two refreshes of one story never build side by side, or the slower, staler one could become
current last: a refresh that finds another one running puts itself back with a short delay.

The digest is built by ``service.jobs.tasks.build_digest``, the same cached path as
``POST /v1/digests``: articles already analysed cost no model call, and an unchanged set of
analyses reuses the stored digest. ``send_callback`` is its own job so a slow or failing CMS
never holds up analysis; it is retried over about a day on the callback schedule
(``service.callbacks``: jittered waits, the CMS's Retry-After honoured, never again after a 410),
and every attempt is in the job's ``attempts``, ``error`` and ``run_after`` and in one log line.

Both jobs carry the trace context of whatever queued them (``service.tracing``), so a CMS event,
the refresh it caused, the model calls and the callback are one trace.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.webhooks import DigestUpdated, DigestUpdatedData
from service import callbacks, tracing
from service.errors import ConfigError, NotFoundError
from service.jobs import tasks
from service.jobs.context import JobContext, Payload, Result
from service.settings import Settings
from service.store import articles, digests, jobs, stories
from service.store.jobs import JobKind, JobRecord, JobSpec
from service.store.models import new_id, utcnow

log = structlog.get_logger(__name__)


def refresh_key(story_id: str) -> str:
    return f"refresh:{story_id}"


def refresh_spec(story_id: str, settings: Settings, *, delay_s: float | None = None) -> JobSpec:
    """The story's refresh job, to start after the debounce delay, carrying the current trace."""
    delay = settings.story_refresh_delay_s if delay_s is None else delay_s
    return JobSpec(JobKind.REFRESH_STORY, tracing.inject({"story_id": story_id}), dedupe_key=refresh_key(story_id),
                   max_attempts=settings.job_max_attempts, run_after=utcnow() + timedelta(seconds=delay))


async def schedule_refresh(
    *, session: AsyncSession, story_id: str, settings: Settings, delay_s: float | None = None
) -> JobRecord:
    """Queue the story's refresh in the caller's transaction, or join the one already queued.

    The delay (``story_refresh_delay_s``) is the debounce: a queued refresh keeps its start time,
    so the events of a burst that arrive within it are all read by one build.
    """
    (job,) = await jobs.enqueue_many(session=session, specs=[refresh_spec(story_id, settings, delay_s=delay_s)])
    return job


async def refresh_story(ctx: JobContext, payload: Payload) -> Result:
    """Payload ``story_id``: rebuild its digest from its live articles and make it current."""
    story_id: str = payload["story_id"]
    async with ctx.sessions() as session, session.begin():
        # Counted after our own claim was committed: of two refreshes that start together, at least
        # the later one sees both and steps back, so no two builds of one story overlap.
        if await jobs.count_running(session=session, kind=JobKind.REFRESH_STORY, dedupe_key=refresh_key(story_id)) > 1:
            again = await schedule_refresh(
                session=session, story_id=story_id, settings=ctx.settings,
                delay_s=ctx.settings.story_refresh_busy_retry_s,
            )
            log.info("story.refresh_deferred", story_id=story_id, next_job_id=again.id)
            return {"story_id": story_id, "deferred_to": again.id}
        live = await articles.list_by_story(session=session, story_id=story_id)
        if not live:
            retired = await stories.retire_current_digest(session=session, story_id=story_id)
            log.info("story.emptied", story_id=story_id, retired_digest_id=retired)
            return {"story_id": story_id, "digest_id": None, "retired_digest_id": retired}
    digest_id = new_id()
    built = await tasks.build_digest(
        ctx, {"digest_id": digest_id, "article_ids": [a.id for a in live], "story_id": story_id, "pins": []}
    )
    result: dict[str, Any] = {**built, "articles": len(live)}
    if ctx.settings.callback_url:
        # Not skipped for an unchanged digest: after a crash between the digest and this enqueue,
        # the re-run finds "unchanged" and the CMS would never hear of it. A repeat is harmless.
        async with ctx.sessions() as session, session.begin():
            job = await schedule_callback(session=session, story_id=story_id, digest_id=digest_id,
                                          settings=ctx.settings)
        result["callback_job_id"] = job.id
    log.info("story.refreshed", story_id=story_id, digest_id=digest_id, articles=len(live),
             cache_hit=built.get("cache_hit"))
    return result


async def schedule_callback(*, session: AsyncSession, story_id: str, digest_id: str, settings: Settings) -> JobRecord:
    """Queue the ``digest.updated`` event. Its webhook-id is fixed now, so the CMS can spot retries."""
    return await jobs.enqueue(
        session=session,
        kind=JobKind.SEND_CALLBACK,
        payload=tracing.inject(
            {"story_id": story_id, "digest_id": digest_id, "webhook_id": f"msg_{uuid.uuid4().hex}"}),
        max_attempts=settings.callback_max_attempts,
    )


async def send_callback(ctx: JobContext, payload: Payload) -> Result:
    """Payload ``story_id``, ``digest_id``, ``webhook_id``: POST the signed event to the CMS."""
    settings = ctx.settings
    if not settings.callback_url or settings.callback_secret is None:
        raise ConfigError("NEWSDIGEST_CALLBACK_URL and NEWSDIGEST_CALLBACK_SECRET are needed to send callbacks")
    digest_id: str = payload["digest_id"]
    async with ctx.sessions() as session:
        record = await digests.get_digest(session=session, digest_id=digest_id)
    if record is None:
        raise NotFoundError(f"digest {digest_id} does not exist")
    if not record.is_current:
        # A newer digest of the story sends its own event; this one arriving late would undo it.
        log.info("callback.superseded", digest_id=digest_id, story_id=payload["story_id"])
        return {"digest_id": digest_id, "story_id": payload["story_id"], "skipped": "superseded"}
    event = DigestUpdated(
        timestamp=record.created_at,
        data=DigestUpdatedData(story_id=payload["story_id"], digest_id=digest_id,
                               headline=record.digest.headline, url=f"/v1/digests/{digest_id}"),
    )
    # A failed attempt raises callbacks.DeliveryFailed, which tells the worker when to try again.
    status = await callbacks.deliver(url=settings.callback_url, secret=settings.callback_secret, event=event,
                                     webhook_id=payload["webhook_id"], timeout_s=settings.callback_timeout_s)
    return {"digest_id": digest_id, "story_id": payload["story_id"], "status_code": status}
