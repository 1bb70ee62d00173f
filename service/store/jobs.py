"""A job queue in the database, so a job survives the crash of the process that ran it.

``queued -> running -> succeeded | failed``; a failed attempt goes back to ``queued`` with a
backoff while attempts remain. Claiming is one ``UPDATE ... WHERE id = (SELECT ... LIMIT 1)``
statement: PostgreSQL adds ``FOR UPDATE SKIP LOCKED`` so workers never wait on each other, and
SQLite, which admits one writer at a time, needs nothing more. A worker that dies leaves its job
``running``; :func:`requeue_stale` gives it back to the queue once its lock is old enough, and
the attempt it used still counts, so a job that kills its worker cannot loop forever.

Callers commit: a claim must be committed before the work starts (on SQLite an open claim holds
the only write lock), and a job enqueued with the article or webhook delivery that caused it
commits, or vanishes, with them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from sqlalchemy import exists, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from service.store import _dialect
from service.store.models import Job, new_id, utcnow

JobKind = Literal["analyze_article", "build_digest", "refresh_story", "send_callback"]
JobStatus = Literal["queued", "running", "succeeded", "failed"]
JOB_KINDS: frozenset[str] = frozenset(get_args(JobKind))
_MAX_BACKOFF = timedelta(minutes=10)


@dataclass(frozen=True)
class JobRecord:
    """A job as the API and workers see it; ``kind`` stays a str so a newer release's jobs still load."""

    id: str
    kind: str
    payload: dict[str, Any]
    status: JobStatus
    attempts: int
    max_attempts: int
    error: str | None
    result: dict[str, Any] | None
    locked_by: str | None
    locked_at: datetime | None
    run_after: datetime
    dedupe_key: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def done(self) -> bool:
        return self.status in ("succeeded", "failed")


def _record(row: Job) -> JobRecord:
    return JobRecord(**{field.name: getattr(row, field.name) for field in fields(JobRecord)})


async def _one(session: AsyncSession, stmt: Any) -> JobRecord | None:
    row = await session.scalar(stmt, execution_options={"populate_existing": True})
    return _record(row) if row is not None else None


def backoff(attempts: int) -> timedelta:
    """Wait before retry number ``attempts``: 5 s, 10 s, 20 s ... capped at 10 minutes."""
    return min(timedelta(seconds=5 * 2 ** max(attempts - 1, 0)), _MAX_BACKOFF)


async def enqueue(
    *,
    session: AsyncSession,
    kind: JobKind,
    payload: Mapping[str, Any],
    dedupe_key: str | None = None,
    max_attempts: int = 3,
    run_after: datetime | None = None,
) -> JobRecord:
    """Queue a job; with ``dedupe_key``, return the already queued job with that key instead.

    This coalesces bursts (ten webhook updates to one story make one refresh), and the queued
    job's payload wins. Only queued jobs count: once one runs, a new request queues a new job,
    because the running one may have read the data too early.
    """
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}; expected one of {sorted(JOB_KINDS)}")
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    now = utcnow()
    values: dict[str, Any] = {
        "id": new_id(),
        "kind": kind,
        "payload": dict(payload),
        "status": "queued",
        "attempts": 0,
        "max_attempts": max_attempts,
        "run_after": run_after or now,
        "dedupe_key": dedupe_key,
        "created_at": now,
        "updated_at": now,
    }
    columns = Job.__table__.c
    source = select(*(literal(value, columns[name].type) for name, value in values.items()))
    twin = select(Job).where(Job.dedupe_key == dedupe_key, Job.status == "queued")
    if dedupe_key is not None:
        await _dialect.lock(session, f"jobs:{dedupe_key}")
        # Check and insert in one statement, so SQLite's write lock covers both.
        source = source.where(~exists(twin))
    inserted = await session.scalar(insert(Job).from_select(list(values), source).returning(Job.id))
    if inserted is None:
        return _record((await session.scalars(twin.order_by(Job.created_at).limit(1))).one())
    return _record(await session.get_one(Job, inserted))


async def claim_next(
    *,
    session: AsyncSession,
    worker_id: str,
    kinds: Collection[str] | None = None,
    now: datetime | None = None,
) -> JobRecord | None:
    """Take the oldest due queued job for ``worker_id``, counting an attempt; None when idle.

    Two workers never get the same job. Commit right away: the claim is only visible then.
    """
    now = now or utcnow()
    # An alias, or the subquery would correlate to the UPDATE's own table and lose its FROM.
    candidate = aliased(Job, name="candidate")
    pick = select(candidate.id).where(candidate.status == "queued", candidate.run_after <= now)
    if kinds is not None:
        pick = pick.where(candidate.kind.in_(list(kinds)))
    # SQLite renders no FOR UPDATE clause: its single writer already makes this atomic.
    pick = pick.order_by(candidate.run_after, candidate.created_at, candidate.id).limit(1)
    pick = pick.with_for_update(skip_locked=True)
    stmt = (
        update(Job)
        .where(Job.id == pick.scalar_subquery(), Job.status == "queued")
        .values(status="running", locked_by=worker_id, locked_at=now, attempts=Job.attempts + 1, updated_at=now)
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    return await _one(session, stmt)


async def heartbeat(*, session: AsyncSession, job_id: str, worker_id: str, now: datetime | None = None) -> bool:
    """Refresh the lock of a long job so it is not taken for abandoned; False if it was lost."""
    now = now or utcnow()
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == "running", Job.locked_by == worker_id)
        .values(locked_at=now, updated_at=now)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return await session.scalar(stmt) is not None


async def requeue_stale(
    *, session: AsyncSession, older_than: timedelta, now: datetime | None = None
) -> list[JobRecord]:
    """Give back ``running`` jobs whose lock is older than ``older_than`` (their worker died).

    A job that has used all its attempts is failed instead. Returns the jobs changed.
    """
    now = now or utcnow()
    stale = (Job.status == "running", Job.locked_at < now - older_than)
    note = f"worker stopped responding (no heartbeat for {older_than.total_seconds():g} s)"
    exhausted = (
        update(Job)
        .where(*stale, Job.attempts >= Job.max_attempts)
        .values(status="failed", error=note, finished_at=now, updated_at=now)
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    requeued = (
        update(Job)
        .where(*stale)
        .values(status="queued", error=note, locked_by=None, locked_at=None, run_after=now, updated_at=now)
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    changed: list[JobRecord] = []
    for stmt in (exhausted, requeued):
        rows = await session.scalars(stmt, execution_options={"populate_existing": True})
        changed.extend(_record(row) for row in rows)
    return changed


async def finish(
    *,
    session: AsyncSession,
    job_id: str,
    result: Mapping[str, Any] | None = None,
    worker_id: str | None = None,
) -> JobRecord | None:
    """Mark a running job succeeded; None if it is not running (or, with ``worker_id``, not ours).

    A None means the job was requeued as stale while we worked: the other run owns it now.
    """
    now = utcnow()
    stmt = update(Job).where(Job.id == job_id, Job.status == "running")
    if worker_id is not None:
        stmt = stmt.where(Job.locked_by == worker_id)
    result = dict(result) if result is not None else None
    stmt = stmt.values(status="succeeded", result=result, error=None, finished_at=now, updated_at=now)
    return await _one(session, stmt.returning(Job).execution_options(synchronize_session=False))


async def fail(
    *,
    session: AsyncSession,
    job_id: str,
    error: str,
    worker_id: str | None = None,
    retry: bool = True,
    retry_in: timedelta | None = None,
) -> JobRecord | None:
    """Record a failed attempt: queued again after ``retry_in`` (default :func:`backoff`) while
    attempts remain and ``retry`` is true, otherwise failed for good. None as for :func:`finish`.
    """
    job = await get_job(session=session, job_id=job_id)
    if job is None or job.status != "running" or (worker_id is not None and job.locked_by != worker_id):
        return None
    now = utcnow()
    if retry and job.attempts < job.max_attempts:
        wait = retry_in if retry_in is not None else backoff(job.attempts)
        values: dict[str, Any] = {"status": "queued", "run_after": now + wait, "locked_by": None, "locked_at": None}
    else:
        values = {"status": "failed", "finished_at": now}
    stmt = (
        update(Job)
        # Unchanged since we read it: not requeued as stale and claimed again in between.
        .where(Job.id == job_id, Job.status == "running", Job.attempts == job.attempts, Job.locked_by == job.locked_by)
        .values(error=error, updated_at=now, **values)
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    return await _one(session, stmt)


async def get_job(*, session: AsyncSession, job_id: str) -> JobRecord | None:
    return await _one(session, select(Job).where(Job.id == job_id))
