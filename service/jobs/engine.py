"""The distributed backend: procrastinate on the service's own PostgreSQL runs the same job functions.

``NEWSDIGEST_JOB_BACKEND=procrastinate`` changes who runs jobs, not what a job is. The API still
writes a row to ``jobs`` (``JobQueue.submit``, ``story_jobs.schedule_refresh`` ...), and a trigger
(revision ``0002_job_engine``) defers one procrastinate job ``newsdigest.run_job(job_id)`` in the
same transaction, so a job exists in the engine exactly when its row commits. An engine worker
claims that row (``jobs.claim_next`` with its id) and runs it through the database worker's own
attempt logic (``Worker.execute``: heartbeats, retries with backoff, outcome in the row), so
``GET /v1/jobs/{id}`` and every retry rule read the same on both backends.

What procrastinate adds: workers on many machines fed by LISTEN/NOTIFY instead of polling; queues
named after job kinds (``--queue`` picks some); the lock ``story:<id>``, so refreshes of one story
run one at a time while other stories proceed; and worker heartbeats. A SIGKILLed worker's jobs
stay ``doing`` in procrastinate; every worker sweeps for those whose worker has sent no heartbeat
for ``job_lock_timeout_s``, requeues the row they held (the lost attempt counts, so a job that
kills its worker ends ``failed``) and fails the stalled procrastinate job, which frees its lock.
A worker restarted under the same name takes its rows back at once (``service.jobs.runtime``);
the stalled procrastinate jobs that held them are still failed by the sweep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Any

import procrastinate
import structlog
from procrastinate.app import WorkerOptions
from sqlalchemy.engine import make_url

from service.jobs.runtime import Runtime, open_runtime
from service.jobs.worker import TASKS, Worker
from service.settings import Settings
from service.store import engine_jobs, jobs
from service.store.models import utcnow

log = structlog.get_logger(__name__)

RUN_JOB = "newsdigest.run_job"


def connector(settings: Settings, *, schema: str, max_size: int) -> procrastinate.PsycopgConnector:
    """procrastinate's psycopg pool on the service's database, its own schema (0002_job_engine) on the path."""
    url = make_url(settings.database_url).set(drivername="postgresql")
    return procrastinate.PsycopgConnector(
        conninfo=url.render_as_string(hide_password=False),
        kwargs={"options": f"-c search_path={schema}"},
        min_size=1,
        max_size=max_size,
    )


class EngineWorker:
    """One engine worker process: procrastinate's worker running :meth:`run_job`, plus the stall sweep."""

    def __init__(self, runtime: Runtime, *, schemas: engine_jobs.EngineSchemas,
                 queues: list[str] | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.queues = queues or self.settings.job_queues or None
        self.process = f"{socket.gethostname()}:{os.getpid()}"
        concurrency = self.settings.worker_concurrency
        # Jobs, the NOTIFY listener, heartbeats and the sweep each hold a connection at times.
        pool = connector(self.settings, schema=schemas.procrastinate, max_size=concurrency + 4)
        self.app = procrastinate.App(connector=pool)
        self.app.task(name=RUN_JOB, pass_context=True)(self.run_job)

    @classmethod
    async def for_runtime(cls, runtime: Runtime, *, queues: list[str] | None = None) -> EngineWorker:
        """A worker on the engine schemas that go with the runtime's database."""
        async with runtime.sessions() as session:
            schemas = await engine_jobs.engine_schemas(session)
        return cls(runtime, schemas=schemas, queues=queues)

    async def run_job(self, context: procrastinate.JobContext, job_id: str) -> dict[str, Any]:
        """The one procrastinate task: claim the row ``job_id`` and run it as the database worker would."""
        assert context.job.id is not None
        name = engine_jobs.claim_name(context.job.id, self.process)
        holder = self.runtime.holder
        async with self.runtime.sessions() as session, session.begin():
            job = await jobs.claim_next(session=session, job_id=job_id, worker_id=name, owner=holder.owner,
                                        run=holder.run)
        if job is None:  # finished, running elsewhere, or delivered twice: the row decides, once
            log.info("engine.job_skipped", job_id=job_id, engine_job_id=context.job.id)
            return {"job_id": job_id, "skipped": True}
        if job.kind not in TASKS:  # a newer release queued it: say so in the row, never retry it here
            async with self.runtime.sessions() as session, session.begin():
                await jobs.fail(session=session, job_id=job.id, error=f"unknown job kind {job.kind!r}",
                                worker_id=name, retry_in=None)
            return {"job_id": job_id, "failed": "unknown kind"}
        await Worker(self.runtime.job_context, self.runtime.queue, holder=holder, worker_id=name).execute(job)
        return {"job_id": job_id}

    async def sweep(self) -> None:
        """Requeue the rows of stalled procrastinate jobs and rows no worker heartbeats any more;
        dispatch again queued rows whose procrastinate job is gone."""
        timeout = self.settings.job_lock_timeout_s
        stalled = await self.app.job_manager.get_stalled_jobs(task_name=RUN_JOB, seconds_since_heartbeat=timeout)
        for stalled_job in stalled:
            assert stalled_job.id is not None
            async with self.runtime.sessions() as session, session.begin():
                recovery = await engine_jobs.requeue_stalled(
                    session=session, engine_job_id=stalled_job.id, job_id=str(stalled_job.task_kwargs.get("job_id")))
            if recovery.recovered:
                row = recovery.job
                log.warning("engine.stalled_job_recovered", engine_job_id=stalled_job.id,
                            job_id=stalled_job.task_kwargs.get("job_id"),
                            status=row.status if row else None, attempts=row.attempts if row else None)
        async with self.runtime.sessions() as session, session.begin():
            for row in await jobs.requeue_stale(session=session, older_than=timedelta(seconds=timeout)):
                log.warning("job.requeued_stale", job_id=row.id, kind=row.kind, status=row.status,
                            attempts=row.attempts)
            orphans = await engine_jobs.dispatch_orphans(
                session=session, due_before=utcnow() - timedelta(seconds=timeout))
        if orphans:
            log.warning("engine.orphans_dispatched", job_ids=orphans)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # the database is away for a moment: the next sweep tries again
                log.exception("engine.sweep_failed")
            await asyncio.sleep(self.settings.job_lock_timeout_s / 3)

    async def run(self) -> None:
        """Run until cancelled; cancelling stops gracefully (running jobs get ``worker_shutdown_grace_s``)."""
        settings = self.settings
        async with self.app.open_async():
            async with self.runtime.sessions() as session, session.begin():
                caught_up = await engine_jobs.enable_dispatch(session=session)
            log.info("engine.worker_started", process=self.process, queues=self.queues,
                     concurrency=settings.worker_concurrency, dispatched_backlog=len(caught_up))
            sweeper = asyncio.create_task(self._sweep_forever(), name="engine-sweep")
            try:
                options: WorkerOptions = {
                    "name": self.process,
                    "concurrency": settings.worker_concurrency,
                    "install_signal_handlers": False,
                    "shutdown_graceful_timeout": settings.worker_shutdown_grace_s,
                    # NOTIFY wakes workers for new jobs; polling finds delayed ones (debounced refreshes, retries).
                    "fetch_job_polling_interval": settings.worker_poll_interval_s,
                    "update_heartbeat_interval": settings.job_lock_timeout_s / 3,
                    "stalled_worker_timeout": settings.job_lock_timeout_s,
                    "delete_jobs": "successful",  # the jobs table keeps the record
                }
                if self.queues:
                    options["queues"] = self.queues
                await self.app.run_worker_async(**options)
            finally:
                sweeper.cancel()
                with suppress(asyncio.CancelledError):
                    await sweeper
                log.info("engine.worker_stopped", process=self.process)


@asynccontextmanager
async def running_engine_worker(runtime: Runtime, *, queues: list[str] | None = None) -> AsyncIterator[EngineWorker]:
    """An engine worker in a background task until the block ends, then stopped gracefully."""
    worker = await EngineWorker.for_runtime(runtime, queues=queues)
    task = asyncio.create_task(worker.run(), name="engine-worker")
    try:
        yield worker
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def serve_engine_worker(settings: Settings, *, queues: list[str] | None = None) -> None:
    """``newsdigest worker`` on the procrastinate backend: run jobs until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(settings) as runtime, running_engine_worker(runtime, queues=queues):
        await stop.wait()
        log.info("worker.shutdown_requested")
