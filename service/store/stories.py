"""A story's digest retired when its last article goes: the one digest write outside ``digests``.

Kept apart from ``digests`` (the digest history and its cache) because it only matters to living
story digests (``service.jobs.story_jobs``); whether a story's refresh is already running is a
question for the jobs table (``service.store.jobs.count_running``).
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from service.store import _dialect
from service.store.models import Digest as DigestRow


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
