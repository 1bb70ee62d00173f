"""The jobs table as the distributed engine sees it (PostgreSQL only; ``service/jobs/engine.py``).

With ``NEWSDIGEST_JOB_BACKEND=procrastinate`` the jobs table stays the record of every job, and
procrastinate only delivers them: a trigger (revision ``0002_job_engine``) defers one procrastinate
job per row that becomes ``queued``, and the engine worker running it claims that very row here.
The claim is the database worker's own (``jobs.claim_next`` with the row's id): a row is
``running`` for one worker at a time, so a job delivered twice (a duplicate dispatch, a worker
taken for dead) still runs once.

A worker's claim is named ``pjob:<procrastinate job id>@<host>:<pid>`` (:func:`claim_name`), so
when procrastinate reports one of its jobs stalled (its worker stopped sending heartbeats),
:func:`requeue_stalled` finds the row that job held, gives it back with ``jobs.requeue`` (the
interrupted attempt counts) and fails the stalled procrastinate job, in one transaction. Only the
procrastinate side is SQL here; the jobs table is read and written through ``service.store.jobs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.store import _dialect, jobs
from service.store.jobs import JobRecord

ENGINE = "procrastinate"


@dataclass(frozen=True)
class EngineSchemas:
    """Where revision 0002_job_engine put procrastinate's objects and ours (always double-quoted here)."""

    procrastinate: str
    coordination: str


def schema_names(app_schema: str) -> EngineSchemas:
    """The rule of revision 0002_job_engine: ``procrastinate`` and ``coordination`` next to ``public``,
    ``X_procrastinate`` and ``X_coordination`` when newsdigest's tables live in schema ``X``."""
    if app_schema == "public":
        return EngineSchemas("procrastinate", "coordination")
    return EngineSchemas(f"{app_schema}_procrastinate", f"{app_schema}_coordination")


async def engine_schemas(session: AsyncSession) -> EngineSchemas:
    """The engine's schemas for the schema this session finds newsdigest's tables in.

    The SQL below formats these names in (S608): they come from ``current_schema()``, never a request.
    """
    return schema_names(str(await session.scalar(text("SELECT current_schema()"))))


def claim_name(engine_job_id: int, process: str) -> str:
    """What ``locked_by`` says while a procrastinate job runs a row: ``pjob:<id>@<process>``."""
    return f"pjob:{engine_job_id}@{process}"


async def enable_dispatch(*, session: AsyncSession) -> list[str]:
    """Switch the trigger on and defer every queued row that has no procrastinate job yet.

    Rows queued before the first engine worker started (or while dispatch was off) are not lost.
    Returns the ids deferred now.
    """
    c = (await engine_schemas(session)).coordination
    await session.execute(text(
        f'INSERT INTO "{c}".job_dispatch (engine) VALUES (:engine) ON CONFLICT (engine) DO NOTHING'  # noqa: S608
    ), {"engine": ENGINE})
    return await dispatch_orphans(session=session)


async def dispatch_orphans(*, session: AsyncSession, due_before: datetime | None = None) -> list[str]:
    """Defer a procrastinate job for each queued row (due before ``due_before``) that has none waiting.

    An engine job can end without settling its row (the database failed under the claim): the row
    stays ``queued`` with nothing to run it, and this finds it. Concurrent callers queue behind one
    advisory lock, so a row is deferred once. Returns the ids deferred.
    """
    await _dialect.lock(session, "jobs:engine-dispatch")
    schemas = await engine_schemas(session)
    rows = await session.execute(text(f"""
        SELECT j.id, "{schemas.coordination}".defer_job(j) FROM jobs j
         WHERE j.status = :queued AND j.run_after <= coalesce(:due_before, 'infinity'::timestamptz)
           AND NOT EXISTS (SELECT 1 FROM "{schemas.procrastinate}".procrastinate_jobs p
                            WHERE p.status IN ('todo', 'doing') AND p.args ->> 'job_id' = j.id)
    """), {"queued": jobs.JobStatus.QUEUED, "due_before": due_before})  # noqa: S608
    return [row[0] for row in rows]


@dataclass(frozen=True)
class Recovery:
    """What :func:`requeue_stalled` did: ``recovered`` is False when another worker got there first."""

    recovered: bool
    job: JobRecord | None = None  # the row as changed; None when the stalled job held no row


async def requeue_stalled(*, session: AsyncSession, engine_job_id: int, job_id: str) -> Recovery:
    """Recover one stalled procrastinate job: requeue (or fail) the row it held, then fail it."""
    p = (await engine_schemas(session)).procrastinate
    locked = await session.scalar(text(
        f"""SELECT id FROM "{p}".procrastinate_jobs WHERE id = :id AND status = 'doing' FOR UPDATE SKIP LOCKED"""  # noqa: S608
    ), {"id": engine_job_id})
    if locked is None:
        return Recovery(recovered=False)
    # Back to queued (or failed, its attempts used): the dispatch trigger defers a fresh procrastinate job.
    changed = await jobs.requeue(session=session, job_id=job_id, locked_by_prefix=claim_name(engine_job_id, ""),
                                 reason="worker stopped responding (no engine heartbeat)")
    await session.execute(text(f"""SELECT "{p}".procrastinate_finish_job_v1(:id, 'failed', false)"""),
                          {"id": engine_job_id})
    return Recovery(recovered=True, job=changed[0] if changed else None)
