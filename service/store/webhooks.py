"""Webhook deliveries already handled, so a redelivered event is acknowledged and ignored.

Standard Webhooks senders retry until they get a 2xx and may deliver twice; the ``webhook-id``
header stays the same across retries. Signatures older than the tolerance (minutes) are refused
anyway, so ids only need keeping for a few days.

The intake records one delivery per event at hundreds of events a second, so the statements are
written as SQL text (no construct to build and cache-key per call), and :func:`record_deliveries`
records the deliveries of a whole group-committed batch in one statement.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.store import _dialect
from service.store.models import UTCDateTime, WebhookDelivery, utcnow

_RECORD = text(
    "INSERT INTO webhook_deliveries (webhook_id, event_type, received_at)"
    " VALUES (:webhook_id, :event_type, :received_at) ON CONFLICT (webhook_id) DO NOTHING RETURNING webhook_id"
).bindparams(bindparam("received_at", type_=UTCDateTime()))
# Many at once: the rows as arrays (PostgreSQL) or as one JSON array (SQLite), so the statement's text
# never depends on how many rows it carries and is prepared once.
_RECORD_MANY_POSTGRESQL = text(
    "INSERT INTO webhook_deliveries (webhook_id, event_type, received_at)"
    " SELECT * FROM unnest(CAST(:webhook_id AS varchar[]), CAST(:event_type AS varchar[]),"
    " CAST(:received_at AS timestamptz[]))"
    " ON CONFLICT (webhook_id) DO NOTHING RETURNING webhook_id"
)
_RECORD_MANY_SQLITE = text(
    "INSERT INTO webhook_deliveries (webhook_id, event_type, received_at)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')"
    " FROM json_each(:rows) WHERE true"  # WHERE: SQLite's parser would read ON CONFLICT as a join's ON
    " ON CONFLICT (webhook_id) DO NOTHING RETURNING webhook_id"
)


def _stored_as(session: AsyncSession, column: Any) -> Callable[[Any], Any]:
    """What the column's type makes of a value for this database, as a bound parameter would be stored."""
    dialect = session.get_bind().dialect
    return column.type.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)


async def record_delivery(
    *, session: AsyncSession, webhook_id: str, event_type: str, received_at: datetime | None = None
) -> bool:
    """Remember a delivery; False when this ``webhook_id`` was seen before.

    Record it in the transaction that acts on the event: if handling fails and rolls back, the
    sender's retry is then processed instead of dropped.
    """
    found = await session.scalar(_RECORD, {"webhook_id": webhook_id, "event_type": event_type,
                                           "received_at": received_at or utcnow()})
    return found is not None


async def record_deliveries(*, session: AsyncSession, deliveries: Sequence[tuple[str, str]]) -> list[bool]:
    """:func:`record_delivery` for each ``(webhook_id, event_type)`` in order, in one statement.

    The same as recording them one after another: a ``webhook_id`` seen before, or earlier in
    ``deliveries``, is False.
    """
    first: dict[str, int] = {}
    for n, (webhook_id, _) in enumerate(deliveries):
        first.setdefault(webhook_id, n)
    if not first:
        return []
    rows = [(webhook_id, deliveries[n][1], utcnow()) for webhook_id, n in first.items()]
    if _dialect.dialect_name(session) == "postgresql":
        stored = await session.scalars(_RECORD_MANY_POSTGRESQL, {
            "webhook_id": [r[0] for r in rows], "event_type": [r[1] for r in rows],
            "received_at": [r[2] for r in rows]})
    else:
        when = _stored_as(session, WebhookDelivery.received_at)
        stored = await session.scalars(_RECORD_MANY_SQLITE, {
            "rows": json.dumps([[r[0], r[1], when(r[2])] for r in rows])})
    fresh = set(stored)
    return [webhook_id in fresh and first[webhook_id] == n for n, (webhook_id, _) in enumerate(deliveries)]


async def purge_deliveries(
    *, session: AsyncSession, older_than: timedelta = timedelta(days=7), now: datetime | None = None
) -> int:
    """Forget deliveries older than ``older_than``; returns how many."""
    cutoff = (now or utcnow()) - older_than
    stmt = (
        delete(WebhookDelivery)
        .where(WebhookDelivery.received_at < cutoff)
        .returning(WebhookDelivery.webhook_id)
        .execution_options(synchronize_session=False)
    )
    return len((await session.scalars(stmt)).all())
