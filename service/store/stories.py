"""A story across tables: whether its refresh is already running, and retiring its digest.

Kept apart from ``jobs`` and ``digests`` (the queue's state machine and the digest history)
because these two questions only matter to living story digests (``service.jobs.story_jobs``).
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.store import _dialect
from service.store.models import Digest as DigestRow
from service.store.models import Job


async def count_running(*, session: AsyncSession, kind: str, dedupe_key: str) -> int:
    """Jobs of ``kind`` with ``dedupe_key`` that a worker holds right now (the asking job included)."""
    stmt = select(func.count()).select_from(Job).where(
        Job.kind == kind, Job.dedupe_key == dedupe_key, Job.status == "running"
    )
    return int(await session.scalar(stmt) or 0)


async def retire_current_digest(*, session: AsyncSession, story_id: str) -> str | None:
    """Unmark the story's current digest (its last article was deleted); returns its id, if there was one.

    The row stays: old links to ``/v1/digests/{id}`` keep working, only the story stops serving it.
    """
    await _dialect.lock(session, f"digests:{story_id}")  # the lock save_digest takes for the same story
    retired = await session.scalar(
        update(DigestRow)
        .where(DigestRow.story_id == story_id, DigestRow.is_current)
        .values(is_current=False)
        .returning(DigestRow.id)
        .execution_options(synchronize_session=False)
    )
    return retired
