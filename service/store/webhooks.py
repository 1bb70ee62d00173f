"""Webhook deliveries already handled, so a redelivered event is acknowledged and ignored.

Standard Webhooks senders retry until they get a 2xx and may deliver twice; the ``webhook-id``
header stays the same across retries. Signatures older than the tolerance (minutes) are refused
anyway, so ids only need keeping for a few days.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from service.store import _dialect
from service.store.models import WebhookDelivery, utcnow


async def record_delivery(
    *, session: AsyncSession, webhook_id: str, event_type: str, received_at: datetime | None = None
) -> bool:
    """Remember a delivery; False when this ``webhook_id`` was seen before.

    Record it in the transaction that acts on the event: if handling fails and rolls back, the
    sender's retry is then processed instead of dropped.
    """
    stmt = (
        _dialect.insert(session, WebhookDelivery)
        .values(webhook_id=webhook_id, event_type=event_type, received_at=received_at or utcnow())
        .on_conflict_do_nothing(index_elements=[WebhookDelivery.webhook_id])
        .returning(WebhookDelivery.webhook_id)
    )
    return await session.scalar(stmt) is not None


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
