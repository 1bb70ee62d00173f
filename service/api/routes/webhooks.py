"""POST /v1/webhooks/cms: the CMS's signed article events, answered 202 before any model work.

Authenticated by its Standard Webhooks signature, not by an API key: the CMS's webhook sender
signs with ``NEWSDIGEST_WEBHOOK_SECRET``. The route only writes rows, in one transaction: the
delivery (its ``webhook-id``, so a redelivery is acknowledged and dropped), the article as
received, an analysis job and the story's debounced refresh. The article is prepared by its
analysis job, off the request path, and concurrent events share their transaction's commit
(``service.api.intake``). A refused request (bad signature, stale timestamp, unreadable event,
article too large or without a letter or digit) writes nothing.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.background import BackgroundTask

from schemas.webhooks import ArticleDeleted, WebhookAck
from service import metrics, webhooks
from service.api.intake import ArticleArrival, Batch, IntakeDep, check_article, refresh_stories
from service.api.problems import problem_responses
from service.settings import Settings
from service.store import articles
from service.store import webhooks as deliveries

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
log = structlog.get_logger(__name__)

# One per process: the purge only needs to run now and then, whichever request triggers it.
_janitor = webhooks.DeliveryJanitor()


def _header(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1, **schema}}


# The route reads its raw body (the signature covers those bytes), so FastAPI cannot see what it takes:
# the body is a CmsEvent (components/schemas/CmsEvent, added by service.api.app) and these headers.
CONTRACT: dict[str, Any] = {
    "parameters": [
        _header("webhook-id", "The delivery's id; a redelivery with the same id is acknowledged as a duplicate.",
                maxLength=webhooks.MAX_WEBHOOK_ID),
        _header("webhook-timestamp", "Unix seconds when it was signed; refused more than 5 minutes off.",
                pattern="^[0-9]{1,12}$"),
        _header("webhook-signature", "Space-separated `v1,<base64 HMAC-SHA256>` values; one must match."),
    ],
    "requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/CmsEvent"}}}},
}


@router.post(
    "/cms",
    status_code=202,
    response_model=WebhookAck,
    responses=problem_responses(401, 413, 415, 422),
    openapi_extra=CONTRACT,
)
async def cms_event(request: Request, intake: IntakeDep) -> JSONResponse:
    """Take a CMS event: `article.published`, `article.updated` or `article.deleted`.

    Signed per Standard Webhooks (headers `webhook-id`, `webhook-timestamp`, `webhook-signature`;
    several space-separated `v1,<sig>` values are accepted while a secret is rotated; timestamps
    more than 5 minutes off are refused). The body is `{"type", "timestamp", "data"}` where `data`
    is an article (its CMS `id` required) or, for a deletion, `{"id", "story_id"}`. Answers 202:
    `accepted` (analysis and story refresh queued), `duplicate` (this `webhook-id` was handled
    before; nothing done) or `ignored` (an event type this service does not act on).
    """
    settings, sessions = intake.settings, intake.sessions
    body = await request.body()
    verified = webhooks.verify(body, request.headers, settings.webhook_secret)
    kind = webhooks.event_type(body)
    if kind is not None and not webhooks.is_handled(kind):
        # Acknowledged so the sender does not retry for days an event we will never act on.
        metrics.WEBHOOK_EVENTS.labels(type="other", outcome="ignored").inc()
        log.info("webhook.ignored", webhook_id=verified.webhook_id, event_type=kind[:100])
        return _answer(WebhookAck(status="ignored"), sessions, settings)
    event = webhooks.parse_event(body)
    if isinstance(event, ArticleDeleted):
        async def delete(batch: Batch) -> WebhookAck:
            if not await deliveries.record_delivery(session=batch.session, webhook_id=verified.webhook_id,
                                                    event_type=event.type):
                return WebhookAck(status="duplicate")
            return await _delete(batch, settings, event)

        ack = await intake.writer.write(delete)
    else:
        # Before the transaction, so an article refused (413/422) writes nothing; no preparing here.
        check_article(event.data, max_chars=settings.max_article_chars)
        # Inserted or updated by the CMS id (either event type may come first), analysed, its story refreshed.
        # An article moved to another story leaves its old one, whose digest must drop it too.
        arrived = await intake.writer.write(ArticleArrival(
            event.data, intake.queue, settings, delivery=(verified.webhook_id, event.type), refresh=True))
        if not arrived.fresh or arrived.record is None or arrived.analysis is None:
            ack = WebhookAck(status="duplicate")
        else:
            ack = WebhookAck(status="accepted", article_id=arrived.record.id,
                             job_ids=[arrived.analysis.id, *arrived.refreshes])
    metrics.WEBHOOK_EVENTS.labels(type=event.type, outcome=ack.status).inc()
    log.info("webhook.received", webhook_id=verified.webhook_id, event_type=event.type, status=ack.status,
             article_id=ack.article_id, jobs=len(ack.job_ids))
    return _answer(ack, sessions, settings)


def _answer(ack: WebhookAck, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> JSONResponse:
    purge = (BackgroundTask(_janitor.purge, sessions, retention_days=settings.webhook_retention_days)
             if _janitor.due() else None)
    return JSONResponse(ack.model_dump(mode="json"), status_code=202, background=purge)


async def _delete(batch: Batch, settings: Settings, event: ArticleDeleted) -> WebhookAck:
    """Soft-delete: the article leaves its story, whose digest is rebuilt without it."""
    record = await articles.get_article_by_cms_id(session=batch.session, cms_id=event.data.id)
    if record is None or not await articles.mark_deleted(session=batch.session, article_id=record.id):
        # Unknown or already deleted: acknowledged, nothing changes (a sender may repeat itself).
        return WebhookAck(status="accepted", article_id=record.id if record is not None else None)
    refreshes = await refresh_stories(batch, settings, {record.story_id, event.data.story_id})
    return WebhookAck(status="accepted", article_id=record.id, job_ids=refreshes)

