"""What a process needs to serve requests or run jobs, opened and closed in one place.

The API's lifespan and ``newsdigest worker`` both open a :class:`Runtime`: the database engine
(refusing a database that is not migrated), the prompt registry, the model client and the queue.

Opening one also cleans up after this process's own crash (:func:`recover_previous_runs`): the
jobs and Idempotency-Keys that a dead earlier run under the same name held are taken back at
once. Without that, a restarted process would answer 409 to the retry of its interrupted request
for ten minutes and leave its interrupted jobs for ``job_lock_timeout_s``, although it knows
nobody is working on them. Locks of live processes are left to those timeouts.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass

import structlog
from prometheus_client import start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.jobs.context import JobContext, LockHolder
from service.jobs.queue import DatabaseJobQueue
from service.jobs.worker import Worker
from service.llm.factory import open_llm
from service.llm.port import Completer
from service.prompts import PromptRegistry
from service.settings import Settings
from service.store import db, idempotency, jobs

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    registry: PromptRegistry
    llm: Completer
    queue: DatabaseJobQueue
    #: Stamped on every job and Idempotency-Key this process locks.
    holder: LockHolder

    @property
    def job_context(self) -> JobContext:
        return JobContext(sessions=self.sessions, llm=self.llm, registry=self.registry, settings=self.settings)


@asynccontextmanager
async def open_runtime(settings: Settings, *, llm: Completer | None = None) -> AsyncIterator[Runtime]:
    """Engine, registry, model client and queue; ``llm`` replaces the client (tests, benchmarks)."""
    engine = db.make_engine(settings.database_url)
    try:
        if settings.migrate_on_start:
            await db.upgrade_engine(engine)
        else:
            await db.check_migrated(engine)  # ConfigError naming `newsdigest db upgrade`
        registry = PromptRegistry.load(settings.prompts_dir, settings.prompt_versions)
        sessions = db.make_sessionmaker(engine)
        holder = LockHolder.of_process(settings)
        await recover_previous_runs(sessions, holder)
        queue = DatabaseJobQueue(sessions, max_attempts=settings.job_max_attempts)
        async with AsyncExitStack() as stack:
            if llm is None:
                llm = await stack.enter_async_context(open_llm(settings))
            yield Runtime(settings, engine, sessions, registry, llm, queue, holder)
    finally:
        await engine.dispose()


async def recover_previous_runs(sessions: async_sessionmaker[AsyncSession], holder: LockHolder) -> None:
    """Take back what earlier runs of ``holder.owner`` that are over (:meth:`LockHolder.outlived`) held.

    Their running jobs go back to the queue, due at once (failed if that was their last attempt:
    the interrupted attempt counts, as after a lock timeout), and their in-flight Idempotency-Keys
    are released, so the client's retry runs anew instead of answering 409.
    """
    async with sessions() as session, session.begin():
        runs = await jobs.held_runs(session=session, owner=holder.owner)
        runs |= await idempotency.held_runs(session=session, owner=holder.owner)
        over = sorted(run for run in runs if holder.outlived(run))
        if not over:
            return
        changed = await jobs.requeue(session=session, owner=holder.owner, runs=over,
                                     reason="interrupted: the process running it stopped, and has started again")
        released = await idempotency.release_runs(session=session, owner=holder.owner, runs=over)
    log.warning("runtime.previous_run_recovered", owner=holder.owner, runs=over,
                requeued=[job.id for job in changed if job.status == jobs.JobStatus.QUEUED],
                failed=[job.id for job in changed if job.status == jobs.JobStatus.FAILED],
                idempotency_keys_released=released)


@asynccontextmanager
async def running_worker(runtime: Runtime) -> AsyncIterator[Worker]:
    """A worker looping in a background task until the block ends, then stopped gracefully."""
    worker = Worker(runtime.job_context, runtime.queue, holder=runtime.holder)
    task = asyncio.create_task(worker.run(), name="worker")
    try:
        yield worker
    finally:
        await worker.stop()
        # The loop notices the stop within one idle wait; cancelling is only the fallback.
        with suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, timeout=runtime.settings.worker_poll_interval_s + 5)


@contextmanager
def metrics_endpoint(settings: Settings) -> Iterator[int | None]:
    """Prometheus ``/metrics`` of a worker process on ``worker_metrics_host:worker_metrics_port`` while the
    block runs; yields the port, or None when it is off (port 0) or taken.

    A taken port (a second worker on the same host with the same setting) is logged and the worker runs
    on without metrics rather than not at all: give each worker process on a host its own port.
    """
    port, host = settings.worker_metrics_port, settings.worker_metrics_host
    if port == 0:
        yield None
        return
    try:
        server, thread = start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("worker.metrics_unavailable", host=host, port=port, error=exc.strerror,
                    fix="set NEWSDIGEST_WORKER_METRICS_PORT to a free port for each worker on this host, or 0")
        yield None
        return
    bound = int(server.server_port)
    log.info("worker.metrics_serving", url=f"http://{host}:{bound}/metrics")
    try:
        yield bound
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def serve_worker(settings: Settings) -> None:
    """``newsdigest worker``: run jobs until SIGINT or SIGTERM, with ``/metrics`` on its own port."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with metrics_endpoint(settings):
        async with open_runtime(settings) as runtime, running_worker(runtime):
            await stop.wait()
            log.info("worker.shutdown_requested")
