"""Outgoing events to the CMS, signed the way the CMS's own webhooks are signed (Standard Webhooks).

One delivery attempt per call: the job around it (``send_callback``) owns retries, so each attempt
is counted and visible in ``GET /v1/jobs/{id}``. The ``webhook-id`` stays the same across the
attempts of one event (receivers deduplicate on it); ``webhook-timestamp`` is the time of each
attempt, because receivers refuse signatures older than five minutes and retries go on longer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from math import floor
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import SecretStr

from schemas.webhooks import DigestUpdated
from service import metrics
from service.errors import CallbackFailed
from service.webhooks import signer

log = structlog.get_logger(__name__)

#: Enough of the CMS's error answer to tell why, little enough to keep in the job row.
_ERROR_BODY_CHARS = 200


def signed_headers(*, secret: SecretStr, webhook_id: str, body: str, at: datetime | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``, signed with the ``whsec_...`` secret."""
    at = at or datetime.now(UTC)
    return {
        "webhook-id": webhook_id,
        # The library signs the whole seconds of ``at``; the header must carry the same number.
        "webhook-timestamp": str(floor(at.timestamp())),
        "webhook-signature": signer(secret).sign(webhook_id, at, body),
    }


async def deliver(
    *,
    url: str,
    secret: SecretStr,
    event: DigestUpdated,
    webhook_id: str,
    timeout_s: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """POST ``event`` once; returns the 2xx status, or raises CallbackFailed (the job retries)."""
    body = event.model_dump_json()
    headers = {
        "content-type": "application/json",
        "user-agent": "newsdigest-callback",
        **signed_headers(secret=secret, webhook_id=webhook_id, body=body),
    }
    # Only the host is logged: a callback URL may carry a token in its path or query.
    host = urlsplit(url).netloc
    async with httpx.AsyncClient(timeout=timeout_s, transport=transport, follow_redirects=False) as client:
        try:
            response = await client.post(url, content=body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            metrics.CALLBACKS.labels(outcome="unreachable").inc()
            log.warning("callback.unreachable", host=host, webhook_id=webhook_id, error=type(exc).__name__)
            raise CallbackFailed(f"could not deliver to {host}: {type(exc).__name__}") from exc
    if not response.is_success:
        metrics.CALLBACKS.labels(outcome="refused").inc()
        log.warning("callback.refused", host=host, webhook_id=webhook_id, status=response.status_code)
        snippet = response.text[:_ERROR_BODY_CHARS]
        raise CallbackFailed(f"{host} answered {response.status_code}: {snippet}", callback_status=response.status_code)
    metrics.CALLBACKS.labels(outcome="delivered").inc()
    log.info("callback.delivered", host=host, webhook_id=webhook_id, status=response.status_code,
             event_type=event.type, digest_id=event.data.digest_id)
    return response.status_code
