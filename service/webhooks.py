"""Incoming CMS webhooks: check the Standard Webhooks signature, then read the event.

Verification is the maintained ``standardwebhooks`` package's: HMAC-SHA256 over
``{webhook-id}.{webhook-timestamp}.{body}``, any of several space-separated ``v1,<sig>`` values
may match (so the CMS can rotate its secret), compared in constant time, and the timestamp must
be within 5 minutes either way (a captured request cannot be replayed later). This module adds
what the library leaves to its caller: malformed header values it would crash on are refusals
too, the raw bytes are what gets verified (never a re-serialised body), and nothing is parsed
before the signature holds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import structlog
from pydantic import SecretStr, TypeAdapter, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from schemas.article import storable_text
from schemas.webhooks import CMS_EVENT_TYPES, CmsEvent
from service.errors import ConfigError, InvalidEvent, InvalidSignature, validation_errors
from service.store import webhooks as deliveries

log = structlog.get_logger(__name__)

HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
#: The store's column width; a longer id could not be remembered, so it could not be deduplicated.
MAX_WEBHOOK_ID = 255
_EVENT: TypeAdapter[CmsEvent] = TypeAdapter(CmsEvent)


@dataclass(frozen=True)
class Verified:
    webhook_id: str


def signer(secret: SecretStr) -> Webhook:
    """The library's signer for a ``whsec_...`` secret (``Settings`` has already checked its form)."""
    try:
        return Webhook(secret.get_secret_value())
    except Exception as exc:  # bad base64 (binascii.Error) or EmptyWebhookSecretError, never the secret itself
        raise ConfigError(f"the webhook secret is unusable ({type(exc).__name__})") from exc


def verify(body: bytes, headers: Mapping[str, str], secret: SecretStr | None) -> Verified:
    """Check the signature of ``body``; raise InvalidSignature (401) otherwise. Writes nothing."""
    if secret is None:
        # Refusing is the only safe answer: without a secret any sender could write articles.
        raise ConfigError("NEWSDIGEST_WEBHOOK_SECRET is not set, so no webhook can be verified")
    given = {name: headers.get(name, "") for name in HEADERS}
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise InvalidSignature(f"missing header(s): {', '.join(missing)}")
    if len(given["webhook-id"]) > MAX_WEBHOOK_ID:
        raise InvalidSignature(f"webhook-id is longer than {MAX_WEBHOOK_ID} characters")
    try:
        signer(secret).verify(body, given, json_parse=False)
    except WebhookVerificationError as exc:
        # The library's messages name the failure (too old, too new, no match) and never the secret.
        raise InvalidSignature(str(exc)) from exc
    except ValueError as exc:
        # A signature without "v1," or with bad base64, or a body that is not UTF-8: the library
        # lets these escape as ValueError; they are unverifiable, so they are refusals as well.
        raise InvalidSignature("malformed webhook-signature header or undecodable body") from exc
    return Verified(webhook_id=given["webhook-id"])


def event_type(body: bytes) -> str | None:
    """The envelope's ``type`` when it is a string (read before full validation, to ignore unknown types).

    A type with a NUL or a lone surrogate is refused (InvalidEvent) like any other text of the body,
    rather than acknowledged as an unknown type: it could not be logged or stored alike everywhere.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return None
    kind = data.get("type") if isinstance(data, dict) else None
    if not isinstance(kind, str):
        return None
    try:
        storable_text(kind)
    except ValueError as exc:
        error = {"loc": ["body", "type"], "msg": f"Value error, {exc}", "type": "value_error"}
        raise InvalidEvent(f"1 invalid field(s): type: {exc}", errors=[error]) from exc
    return kind


def is_handled(kind: str | None) -> bool:
    return kind in CMS_EVENT_TYPES


def parse_event(body: bytes) -> CmsEvent:
    """The event, or InvalidEvent (422) listing each invalid field without echoing values."""
    try:
        return _EVENT.validate_json(body)
    except ValidationError as exc:
        errors = validation_errors(exc, prefix=("body",))
        listing = "; ".join(".".join(str(p) for p in e["loc"][1:]) + f": {e['msg']}" for e in errors[:10])
        raise InvalidEvent(f"{len(errors)} invalid field(s): {listing}", errors=errors) from exc


class DeliveryJanitor:
    """Forgets webhook ids older than the retention, at most once per ``every_s`` in a process.

    Redeliveries come within the sender's retry window (days), so older ids only cost space. The
    purge is one DELETE on an indexed column, run after a response has been sent.
    """

    def __init__(self, every_s: float = 600.0) -> None:
        self.every_s = every_s
        self._next = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.every_s
        return True

    async def purge(self, sessions: async_sessionmaker[AsyncSession], *, retention_days: float) -> int:
        try:
            async with sessions() as session, session.begin():
                purged = await deliveries.purge_deliveries(session=session, older_than=timedelta(days=retention_days))
        except SQLAlchemyError as exc:  # housekeeping: the next request's turn will try again
            log.warning("webhook.purge_failed", error=type(exc).__name__)
            self._next = 0.0
            return 0
        if purged:
            log.info("webhook.deliveries_purged", count=purged, retention_days=retention_days)
        return purged
