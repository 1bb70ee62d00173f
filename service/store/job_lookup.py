"""Job queries the API and the worker need beyond ``jobs``: queue depth, lookup by dedupe key, release.

Kept apart from ``service/store/jobs.py`` (the queue's state machine) because these read or hand
back jobs without taking part in claiming them.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.jobs import JobRecord, _record
from service.store.models import Job, utcnow


async def count_queued(*, session: AsyncSession) -> int:
    """Jobs waiting to run, due or not (the queue-depth gauge)."""
    return int(await session.scalar(select(func.count()).select_from(Job).where(Job.status == "queued")) or 0)


async def latest_by_dedupe_key(*, session: AsyncSession, dedupe_key: str, prefix: bool = False) -> JobRecord | None:
    """The newest job with this ``dedupe_key`` (or, with ``prefix``, one starting with it)."""
    match: ColumnElement[bool]
    if prefix:
        escaped = dedupe_key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        match = Job.dedupe_key.like(escaped + "%", escape="\\")
    else:
        match = Job.dedupe_key == dedupe_key
    row = await session.scalar(
        select(Job).where(match).order_by(Job.created_at.desc(), Job.id.desc()).limit(1)
        .execution_options(populate_existing=True)
    )
    return _record(row) if row is not None else None


async def release(*, session: AsyncSession, job_id: str, worker_id: str) -> bool:
    """Give a running job of ours back to the queue at once (a graceful stop), keeping its attempt count.

    Unlike :func:`service.store.jobs.fail` it records no error: nothing went wrong with the job.
    """
    now = utcnow()
    released = await session.scalar(
        update(Job)
        .where(Job.id == job_id, Job.status == "running", Job.locked_by == worker_id)
        .values(status="queued", locked_by=None, locked_at=None, run_after=now, updated_at=now)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return released is not None
