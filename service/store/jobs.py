"""The jobs table: a queue in the database, so a job survives the crash of the process that ran it.

``queued -> running -> succeeded | failed``; a failed attempt goes back to ``queued`` after the
wait its caller chose while attempts remain. Every read and write of the table is here; the
distributed engine's SQL (``engine_jobs``) goes through these functions too.

Writing: :func:`enqueue` (with coalescing on ``dedupe_key``; :func:`enqueue_many` for many at once),
:func:`claim_next` (the one claim: the oldest due job, or one named job for the engine), :func:`heartbeat`,
:func:`finish`, :func:`fail`, :func:`release` (a graceful stop hands a job back) and :func:`requeue` (the
one way back for the jobs of a worker that is gone; :func:`requeue_stale` is its lock-timeout case).
Reading: :func:`get_job`, :func:`list_jobs`, :func:`latest_by_dedupe_key`, :func:`count_queued`,
:func:`count_running`, :func:`held_runs`.

Claiming is one ``UPDATE ... WHERE id = (SELECT ... LIMIT 1)`` statement: PostgreSQL adds ``FOR
UPDATE SKIP LOCKED`` so workers never wait on each other, and SQLite, which admits one writer at a
time, needs nothing more. A claim names the worker (``locked_by``, which heartbeats and outcomes
must match) and, optionally, the process holding it: ``lock_owner`` (stable across restarts) and
``lock_run`` (this start of it). A worker that dies leaves its job ``running``; the jobs come back
through :func:`requeue`, at once when its own process starts again, otherwise once the lock is
older than the timeout. The attempt it used still counts, so a job that kills its worker cannot
loop forever.

Callers commit: a claim must be committed before the work starts (on SQLite an open claim holds
the only write lock), and a job enqueued with the article or webhook delivery that caused it
commits, or vanishes, with them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from service import tracing
from service.store import _dialect
from service.store.models import Job, JobKind, JobStatus, new_id, utcnow

__all__ = [
    "JobKind",
    "JobRecord",
    "JobSpec",
    "JobStatus",
    "claim_next",
    "count_queued",
    "count_running",
    "enqueue",
    "enqueue_many",
    "fail",
    "finish",
    "get_job",
    "heartbeat",
    "held_runs",
    "latest_by_dedupe_key",
    "list_jobs",
    "release",
    "requeue",
    "requeue_stale",
]


@dataclass(frozen=True)
class JobRecord:
    """A job as the API and workers see it. ``kind`` is a :class:`JobKind`, or the plain string of a
    kind this release does not know (a newer release queued it), so such a job still loads."""

    id: str
    kind: JobKind | str
    payload: dict[str, Any]
    status: JobStatus
    attempts: int
    max_attempts: int
    error: str | None
    result: dict[str, Any] | None
    locked_by: str | None
    locked_at: datetime | None
    lock_owner: str | None
    lock_run: str | None
    run_after: datetime
    dedupe_key: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def done(self) -> bool:
        return self.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)


def _kind(value: str) -> JobKind | str:
    try:
        return JobKind(value)
    except ValueError:
        return value


def _record(row: Job | Row[Any]) -> JobRecord:
    values = {field.name: getattr(row, field.name) for field in fields(JobRecord)}
    values.update(kind=_kind(row.kind), status=JobStatus(row.status))
    return JobRecord(**values)


async def _one(session: AsyncSession, stmt: Any) -> JobRecord | None:
    row = await session.scalar(stmt, execution_options={"populate_existing": True})
    return _record(row) if row is not None else None


async def _all(session: AsyncSession, stmt: Any) -> list[JobRecord]:
    rows = await session.scalars(stmt, execution_options={"populate_existing": True})
    return [_record(row) for row in rows]


def _queued_again(now: datetime, run_after: datetime) -> dict[str, Any]:
    """The columns of a job going back to the queue, whichever way it goes back."""
    return {"status": JobStatus.QUEUED, "locked_by": None, "locked_at": None, "lock_owner": None, "lock_run": None,
            "run_after": run_after, "updated_at": now}


@dataclass(frozen=True)
class JobSpec:
    """One job for :func:`enqueue_many`: :func:`enqueue`'s arguments. ``payload`` is stored as given."""

    kind: JobKind | str
    payload: Mapping[str, Any]
    dedupe_key: str | None = None
    max_attempts: int = 3
    run_after: datetime | None = None


def _kind_of(kind: JobKind | str) -> JobKind:
    try:
        return JobKind(kind)
    except ValueError:
        known = [k.value for k in JobKind]
        raise ValueError(f"unknown job kind {kind!r}; expected one of {known}") from None


async def enqueue(
    *,
    session: AsyncSession,
    kind: JobKind | str,
    payload: Mapping[str, Any],
    dedupe_key: str | None = None,
    max_attempts: int = 3,
    run_after: datetime | None = None,
) -> JobRecord:
    """Queue a job; with ``dedupe_key``, return the already queued job with that key instead.

    ``kind`` may be given as its string, which must name a :class:`JobKind`. Coalescing absorbs
    bursts (ten webhook updates to one story make one refresh), and the queued job's payload wins.
    Only queued jobs count: once one runs, a new request queues a new job, because the running
    one may have read the data too early.
    """
    # The trace of the request that queues it, if tracing is on: the worker continues it (service.tracing).
    spec = JobSpec(kind, tracing.inject(payload), dedupe_key, max_attempts, run_after)
    (job,) = await enqueue_many(session=session, specs=[spec])
    return job


# Written as SQL: the intake queues jobs at hundreds a second, and building, cache-keying and running the
# equivalent constructs (and reading each new row back through the ORM) cost several times the statement.
# The rows travel as arrays (PostgreSQL) or as one JSON array (SQLite), so the statement's text does not
# depend on how many there are and is prepared once. A job with a dedupe key is inserted only when no
# queued job has that key: checked in the same statement, so SQLite's write lock covers check and insert,
# and on PostgreSQL under the keys' advisory locks (``_dialect.lock``'s, taken in one statement below). A
# NULL key equals no key, so a job without one is always inserted.
#
# Each check must find the key's few jobs through the key's index, never through the (status, run_after)
# index, which holds every queued job: behind a backlog of thousands reading them is most of the cost, and
# both planners take that index when their statistics are missing or stale. SQLite is told the key's index
# (INDEXED BY; a missing index is then an error, not a slow scan). PostgreSQL has no such hint: it is
# asked for each key's jobs first (an OFFSET 0 subquery, which the status condition cannot enter, so the
# key's index is the only one that applies) and their status is checked after. Same for the twins below.
_COLUMNS = "id, kind, payload, status, attempts, max_attempts, run_after, dedupe_key, created_at, updated_at"
_NO_TWIN_POSTGRESQL = ("NOT EXISTS (SELECT 1 FROM (SELECT status FROM jobs WHERE dedupe_key = r.dedupe_key OFFSET 0)"
                       " AS same_key WHERE same_key.status = 'queued')")
_NO_TWIN_SQLITE = ("NOT EXISTS (SELECT 1 FROM jobs AS twin INDEXED BY ix_jobs_dedupe_key"
                   " WHERE twin.dedupe_key = json_extract(value, '$[5]') AND twin.status = 'queued')")
_ENQUEUE_POSTGRESQL = text(
    f"INSERT INTO jobs ({_COLUMNS})"  # noqa: S608 (constants only)
    " SELECT r.id, r.kind, CAST(r.payload AS jsonb), 'queued', 0, r.max_attempts, r.run_after, r.dedupe_key,"
    " r.created_at, r.created_at"
    " FROM unnest(CAST(:id AS varchar[]), CAST(:kind AS varchar[]), CAST(:payload AS text[]),"
    " CAST(:max_attempts AS integer[]), CAST(:run_after AS timestamptz[]), CAST(:dedupe_key AS varchar[]),"
    " CAST(:created_at AS timestamptz[])) AS r(id, kind, payload, max_attempts, run_after, dedupe_key, created_at)"
    f" WHERE {_NO_TWIN_POSTGRESQL}"
    " RETURNING id"
)
_ENQUEUE_SQLITE = text(
    f"INSERT INTO jobs ({_COLUMNS})"  # noqa: S608 (constants only)
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), 'queued', 0,"
    " json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),"
    " json_extract(value, '$[6]'), json_extract(value, '$[6]')"
    " FROM json_each(:rows)"
    f" WHERE {_NO_TWIN_SQLITE}"
    " RETURNING id"
)
# The oldest queued job with each of the keys (twins of the specs not inserted), typed as the table's columns.
_ALL_COLUMNS = ", ".join(c.name for c in Job.__table__.c)
_TWINS_POSTGRESQL = text(
    f"SELECT {', '.join(f'same_key.{c.name}' for c in Job.__table__.c)}"  # noqa: S608
    " FROM unnest(CAST(:keys AS varchar[])) AS k(key),"
    " LATERAL (SELECT * FROM jobs WHERE dedupe_key = k.key OFFSET 0) AS same_key"
    " WHERE same_key.status = 'queued' ORDER BY same_key.created_at"
).columns(*Job.__table__.c)
_TWINS_SQLITE = text(
    f"SELECT {_ALL_COLUMNS} FROM jobs INDEXED BY ix_jobs_dedupe_key"  # noqa: S608
    " WHERE dedupe_key IN (SELECT value FROM json_each(:keys)) AND status = 'queued' ORDER BY created_at"
).columns(*Job.__table__.c)
# _dialect.lock's lock for each key, in one round trip; in the order of the locks' own ids, so two
# transactions locking overlapping keys take them in the same order.
_LOCK_POSTGRESQL = text(
    "SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT DISTINCT hashtextextended(k, 0) AS h"
    " FROM unnest(CAST(:names AS text[])) AS k ORDER BY h) AS keys"
)


async def enqueue_many(*, session: AsyncSession, specs: Sequence[JobSpec]) -> list[JobRecord]:
    """:func:`enqueue` for each spec, in order, in three statements at most whatever their number.

    The same as queueing them one after another: a spec whose dedupe key an earlier spec (or an
    already queued job) has gets that job. Unlike :func:`enqueue`, payloads are stored as given:
    a caller queueing for several requests injects each request's trace (``tracing.inject``).
    """
    rows: list[dict[str, Any]] = []
    first: dict[str, dict[str, Any]] = {}
    plan: list[dict[str, Any]] = []  # per spec, the row that answers for it
    for spec in specs:
        kind = _kind_of(spec.kind)
        if spec.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if spec.dedupe_key is not None and spec.dedupe_key in first:
            plan.append(first[spec.dedupe_key])
            continue
        now = utcnow()
        row = {"id": new_id(), "kind": kind, "payload": spec.payload, "max_attempts": spec.max_attempts,
               "run_after": _utc(spec.run_after or now), "dedupe_key": spec.dedupe_key, "created_at": now}
        rows.append(row)
        plan.append(row)
        if spec.dedupe_key is not None:
            first[spec.dedupe_key] = row
    if not rows:
        return []
    when, payload = _stored_as(session, Job.run_after), _stored_as(session, Job.payload)
    stored = [payload(row["payload"]) for row in rows]
    postgresql = _dialect.dialect_name(session) == "postgresql"
    if postgresql:
        if first:
            await session.execute(_LOCK_POSTGRESQL, {"names": [f"jobs:{key}" for key in first]})
        inserted = set(await session.scalars(_ENQUEUE_POSTGRESQL, {
            "id": [row["id"] for row in rows], "kind": [row["kind"] for row in rows], "payload": stored,
            "max_attempts": [row["max_attempts"] for row in rows], "run_after": [row["run_after"] for row in rows],
            "dedupe_key": [row["dedupe_key"] for row in rows], "created_at": [row["created_at"] for row in rows]}))
    else:
        encoded = json.dumps([[row["id"], row["kind"], as_json, row["max_attempts"], when(row["run_after"]),
                               row["dedupe_key"], when(row["created_at"])]
                              for row, as_json in zip(rows, stored, strict=True)])
        inserted = set(await session.scalars(_ENQUEUE_SQLITE, {"rows": encoded}))
    # What a read of the new rows would give (the payload as the database gives it back), without the read.
    for row, as_json in zip(rows, stored, strict=True):
        row["payload"] = json.loads(as_json)
    twins: dict[str, JobRecord] = {}
    if missing := [row["dedupe_key"] for row in rows if row["id"] not in inserted]:
        # A queued job had the key: the oldest one stands for the spec, as it would for enqueue alone.
        found = await session.execute(_TWINS_POSTGRESQL if postgresql else _TWINS_SQLITE,
                                      {"keys": missing if postgresql else json.dumps(missing)})
        for twin in found:
            twins.setdefault(twin.dedupe_key, _record(twin))
    made: dict[str, JobRecord] = {}

    def answer(row: dict[str, Any]) -> JobRecord:
        if row["id"] not in inserted:
            return twins[row["dedupe_key"]]
        if row["id"] not in made:
            made[row["id"]] = JobRecord(
                id=row["id"], kind=row["kind"], payload=row["payload"], status=JobStatus.QUEUED,
                attempts=0, max_attempts=row["max_attempts"], error=None, result=None, locked_by=None,
                locked_at=None, lock_owner=None, lock_run=None, run_after=row["run_after"],
                dedupe_key=row["dedupe_key"], created_at=row["created_at"], updated_at=row["created_at"],
                finished_at=None)
        return made[row["id"]]

    return [answer(row) for row in plan]


def _utc(value: datetime) -> datetime:
    """As ``UTCDateTime`` stores it: naive taken as UTC, aware converted."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _stored_as(session: AsyncSession, column: Any) -> Callable[[Any], Any]:
    """What the column's type makes of a value for this database, as a bound parameter would be stored."""
    dialect = session.get_bind().dialect
    return column.type.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)


async def claim_next(
    *,
    session: AsyncSession,
    worker_id: str,
    kinds: Collection[str] | None = None,
    job_id: str | None = None,
    owner: str | None = None,
    run: str | None = None,
    now: datetime | None = None,
) -> JobRecord | None:
    """Take a queued job for ``worker_id``, counting an attempt; None when there is none.

    Without ``job_id``: the oldest due job (of ``kinds``). With it: that job if it is queued, due
    or not, because the engine delivers a job only once its ``run_after`` has passed by the
    database's clock. ``owner`` and ``run`` name the process holding the claim (see the module
    docstring). Two workers never get the same job. Commit right away: the claim is only visible then.
    """
    now = now or utcnow()
    target: ColumnElement[bool]
    if job_id is not None:
        target = Job.id == job_id
        if kinds is not None:
            target = target & Job.kind.in_(list(kinds))
    else:
        # An alias, or the subquery would correlate to the UPDATE's own table and lose its FROM.
        candidate = aliased(Job, name="candidate")
        pick = select(candidate.id).where(candidate.status == JobStatus.QUEUED, candidate.run_after <= now)
        if kinds is not None:
            pick = pick.where(candidate.kind.in_(list(kinds)))
        # SQLite renders no FOR UPDATE clause: its single writer already makes this atomic.
        pick = pick.order_by(candidate.run_after, candidate.created_at, candidate.id).limit(1)
        target = Job.id == pick.with_for_update(skip_locked=True).scalar_subquery()
    stmt = (
        update(Job)
        .where(target, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.RUNNING, locked_by=worker_id, locked_at=now, lock_owner=owner, lock_run=run,
                attempts=Job.attempts + 1, updated_at=now)
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    return await _one(session, stmt)


async def heartbeat(*, session: AsyncSession, job_id: str, worker_id: str, now: datetime | None = None) -> bool:
    """Refresh the lock of a long job so it is not taken for abandoned; False if it was lost."""
    now = now or utcnow()
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.locked_by == worker_id)
        .values(locked_at=now, updated_at=now)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return await session.scalar(stmt) is not None


async def finish(
    *,
    session: AsyncSession,
    job_id: str,
    result: Mapping[str, Any] | None = None,
    worker_id: str | None = None,
) -> JobRecord | None:
    """Mark a running job succeeded; None if it is not running (or, with ``worker_id``, not ours).

    A None means the job was requeued while we worked (taken for abandoned): the other run owns it now.
    The lock columns stay, as the record of who ran the job.
    """
    now = utcnow()
    stmt = update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING)
    if worker_id is not None:
        stmt = stmt.where(Job.locked_by == worker_id)
    result = dict(result) if result is not None else None
    stmt = stmt.values(status=JobStatus.SUCCEEDED, result=result, error=None, finished_at=now, updated_at=now)
    return await _one(session, stmt.returning(Job).execution_options(synchronize_session=False))


async def fail(
    *,
    session: AsyncSession,
    job_id: str,
    error: str,
    retry_in: timedelta | None,
    worker_id: str | None = None,
) -> JobRecord | None:
    """Record a failed attempt: queued again after ``retry_in`` while attempts remain, failed for good
    when they do not or when ``retry_in`` is None (nothing a retry could fix). None as for :func:`finish`.

    The wait is the caller's policy (the worker's backoff, from settings); the table only counts attempts.
    """
    job = await get_job(session=session, job_id=job_id)
    if job is None or job.status != JobStatus.RUNNING or (worker_id is not None and job.locked_by != worker_id):
        return None
    now = utcnow()
    if retry_in is not None and job.attempts < job.max_attempts:
        values = _queued_again(now, now + retry_in)
    else:
        values = {"status": JobStatus.FAILED, "finished_at": now, "updated_at": now}
    stmt = (
        update(Job)
        # Unchanged since we read it: not requeued as stale and claimed again in between.
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.attempts == job.attempts,
               Job.locked_by == job.locked_by)
        .values(error=error, **values)
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    return await _one(session, stmt)


async def release(*, session: AsyncSession, job_id: str, worker_id: str) -> bool:
    """Give a running job of ours back to the queue at once (a graceful stop), keeping its attempt count.

    Unlike :func:`fail` and :func:`requeue` it records no error: nothing went wrong with the job.
    """
    now = utcnow()
    released = await session.scalar(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.locked_by == worker_id)
        .values(**_queued_again(now, now))
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return released is not None


async def requeue(
    *,
    session: AsyncSession,
    reason: str,
    locked_before: datetime | None = None,
    job_id: str | None = None,
    locked_by_prefix: str | None = None,
    owner: str | None = None,
    runs: Collection[str] | None = None,
    now: datetime | None = None,
) -> list[JobRecord]:
    """Give back to the queue, due at once, the running jobs whose worker is gone; returns the jobs changed.

    Which jobs: every given condition must hold (``locked_at`` before ``locked_before``, the job
    ``job_id``, ``locked_by`` starting with ``locked_by_prefix``, held by ``owner`` in one of
    ``runs``); at least one is required, so a call can never take back every running job. The
    interrupted attempt counts: a job that has used all its attempts is failed instead. ``reason``
    is recorded as the job's error either way.
    """
    held: list[ColumnElement[bool]] = []
    if locked_before is not None:
        held.append(Job.locked_at < locked_before)
    if job_id is not None:
        held.append(Job.id == job_id)
    if locked_by_prefix is not None:
        held.append(Job.locked_by.startswith(locked_by_prefix, autoescape=True))
    if owner is not None:
        held.append(Job.lock_owner == owner)
    if runs is not None:
        if not runs:
            return []
        held.append(Job.lock_run.in_(list(runs)))
    if not held:
        raise ValueError("requeue needs at least one condition: it never takes back every running job")
    now = now or utcnow()
    held.append(Job.status == JobStatus.RUNNING)
    exhausted = (
        update(Job)
        .where(*held, Job.attempts >= Job.max_attempts)
        .values(status=JobStatus.FAILED, error=reason, finished_at=now, updated_at=now)
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    requeued = (
        update(Job)
        .where(*held)
        .values(error=reason, **_queued_again(now, now))
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    return [*await _all(session, exhausted), *await _all(session, requeued)]


async def requeue_stale(
    *, session: AsyncSession, older_than: timedelta, now: datetime | None = None
) -> list[JobRecord]:
    """:func:`requeue` the ``running`` jobs whose lock is older than ``older_than`` (their worker died)."""
    now = now or utcnow()
    note = f"worker stopped responding (no heartbeat for {older_than.total_seconds():g} s)"
    return await requeue(session=session, reason=note, locked_before=now - older_than, now=now)


async def held_runs(*, session: AsyncSession, owner: str) -> set[str]:
    """The runs of ``owner`` that hold running jobs (a process looking for what its dead predecessor held)."""
    rows = await session.scalars(
        select(Job.lock_run).distinct()
        .where(Job.status == JobStatus.RUNNING, Job.lock_owner == owner, Job.lock_run.is_not(None))
    )
    return {run for run in rows if run is not None}


async def get_job(*, session: AsyncSession, job_id: str) -> JobRecord | None:
    return await _one(session, select(Job).where(Job.id == job_id))


async def list_jobs(*, session: AsyncSession, kind: JobKind | str | None = None) -> list[JobRecord]:
    """Every job (of ``kind``), oldest first."""
    stmt = select(Job).order_by(Job.created_at, Job.id)
    if kind is not None:
        stmt = stmt.where(Job.kind == kind)
    return await _all(session, stmt)


async def latest_by_dedupe_key(*, session: AsyncSession, dedupe_key: str, prefix: bool = False) -> JobRecord | None:
    """The newest job with this ``dedupe_key`` (or, with ``prefix``, one starting with it)."""
    match = Job.dedupe_key.startswith(dedupe_key, autoescape=True) if prefix else Job.dedupe_key == dedupe_key
    return await _one(session, select(Job).where(match).order_by(Job.created_at.desc(), Job.id.desc()).limit(1))


async def count_queued(*, session: AsyncSession) -> int:
    """Jobs waiting to run, due or not (the queue-depth gauge)."""
    stmt = select(func.count()).select_from(Job).where(Job.status == JobStatus.QUEUED)
    return int(await session.scalar(stmt) or 0)


async def count_running(*, session: AsyncSession, kind: JobKind, dedupe_key: str) -> int:
    """Jobs of ``kind`` with ``dedupe_key`` that a worker holds right now (the asking job included)."""
    stmt = select(func.count()).select_from(Job).where(
        Job.kind == kind, Job.dedupe_key == dedupe_key, Job.status == JobStatus.RUNNING
    )
    return int(await session.scalar(stmt) or 0)
