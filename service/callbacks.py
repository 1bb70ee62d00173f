"""Outgoing events to the CMS, signed the way the CMS's own webhooks are signed (Standard Webhooks).

One delivery attempt per call: the job around it (``send_callback``) owns retries, so each attempt
is counted and visible in ``GET /v1/jobs/{id}`` (``attempts``, the last ``error`` with the CMS's
status and ``Retry-After``, and ``run_after``, when the next one starts). The ``webhook-id`` stays the
same across the attempts of one event (receivers deduplicate on it); ``webhook-timestamp`` is the
time of each attempt, because receivers refuse signatures older than five minutes and retries go on
longer.

When the next attempt starts is this module's call, not the job queue's general backoff
(:meth:`DeliveryFailed.next_attempt_in`): the waits of ``NEWSDIGEST_CALLBACK_RETRY_SCHEDULE_S``
(5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h by default: eight attempts over about 27.6 hours, as
Standard Webhooks senders do), each drawn within +-``CALLBACK_RETRY_JITTER`` so a CMS coming back
is not hit by every queued event at once; a longer ``Retry-After`` from the CMS (429 or 503) is
honoured up to ``CALLBACK_RETRY_AFTER_MAX_S``; a 410 Gone stops at once, since the receiver said the
endpoint is gone for good.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from math import floor, isfinite
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import SecretStr

from schemas.webhooks import DigestUpdated
from service import metrics
from service.errors import CallbackFailed
from service.settings import Settings
from service.webhooks import signer

log = structlog.get_logger(__name__)

#: Enough of the CMS's error answer to tell why, little enough to keep in the job row.
_ERROR_BODY_CHARS = 200


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); None if absent or nonsense."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if isfinite(seconds) else None


def retry_wait(attempts: int, settings: Settings, *, retry_after: float | None = None,
               rng: random.Random | None = None) -> timedelta:
    """The wait before the attempt after attempt number ``attempts``: that step of the schedule (the
    last step repeats), jittered, or the CMS's Retry-After (capped) when that is longer."""
    schedule = settings.callback_retry_schedule_s
    base = schedule[min(max(attempts, 1), len(schedule)) - 1]
    spread = settings.callback_retry_jitter
    wait = base * (rng or random).uniform(1 - spread, 1 + spread) if base else 0.0
    if retry_after is not None:
        wait = max(wait, min(retry_after, settings.callback_retry_after_max_s))
    return timedelta(seconds=wait)


def retry_window(settings: Settings) -> timedelta:
    """How long an event is retried before its job fails, without jitter or Retry-After."""
    waits = [float(retry_wait(n, settings.model_copy(update={"callback_retry_jitter": 0.0})).total_seconds())
             for n in range(1, settings.callback_max_attempts)]
    return timedelta(seconds=sum(waits))


class DeliveryFailed(CallbackFailed):
    """One attempt the CMS did not take; it knows when the next one should start.

    The worker asks :meth:`next_attempt_in` (instead of its general backoff); None means never again.
    """

    def __init__(self, detail: str, *, status_code: int | None = None, retry_after: float | None = None) -> None:
        extra = {"callback_status": status_code} if status_code is not None else {}
        super().__init__(detail, **extra)
        self.status_code = status_code
        self.retry_after = retry_after

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver says this endpoint will never take events again."""
        return self.status_code == 410

    def next_attempt_in(self, attempts: int, settings: Settings) -> timedelta | None:
        return None if self.gone else retry_wait(attempts, settings, retry_after=self.retry_after)


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
    """POST ``event`` once; returns the 2xx status, or raises DeliveryFailed (the job retries, unless 410)."""
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
            raise DeliveryFailed(f"could not deliver to {host}: {type(exc).__name__}") from exc
    if not response.is_success:
        status = response.status_code
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        outcome = "gone" if status == 410 else "refused"
        metrics.CALLBACKS.labels(outcome=outcome).inc()
        log.warning("callback." + outcome, host=host, webhook_id=webhook_id, status=status, retry_after_s=retry_after)
        snippet = " ".join(response.text[:_ERROR_BODY_CHARS].split())
        detail = f"{host} answered {status}"
        if status == 410:
            detail += " (Gone: not retried)"
        elif retry_after is not None:
            detail += f" (Retry-After {retry_after:g} s)"
        raise DeliveryFailed(f"{detail}: {snippet}" if snippet else detail, status_code=status,
                             retry_after=retry_after)
    metrics.CALLBACKS.labels(outcome="delivered").inc()
    log.info("callback.delivered", host=host, webhook_id=webhook_id, status=response.status_code,
             event_type=event.type, digest_id=event.data.digest_id)
    return response.status_code
