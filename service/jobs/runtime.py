"""What a process needs to serve requests or run jobs, opened and closed in one place.

The API's lifespan and ``newsdigest worker`` both open a :class:`Runtime`: the database engine
(refusing a database that is not migrated), the prompt registry, the model client and the queue.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.jobs.context import JobContext
from service.jobs.queue import DatabaseJobQueue
from service.jobs.worker import Worker
from service.llm.factory import open_llm
from service.llm.port import Completer
from service.prompts import PromptRegistry
from service.settings import Settings
from service.store import db

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    registry: PromptRegistry
    llm: Completer
    queue: DatabaseJobQueue

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
        queue = DatabaseJobQueue(sessions, max_attempts=settings.job_max_attempts)
        async with AsyncExitStack() as stack:
            if llm is None:
                llm = await stack.enter_async_context(open_llm(settings))
            yield Runtime(settings, engine, sessions, registry, llm, queue)
    finally:
        await engine.dispose()


@asynccontextmanager
async def running_worker(runtime: Runtime) -> AsyncIterator[Worker]:
    """A worker looping in a background task until the block ends, then stopped gracefully."""
    worker = Worker(runtime.job_context, runtime.queue)
    task = asyncio.create_task(worker.run(), name="worker")
    try:
        yield worker
    finally:
        await worker.stop()
        # The loop notices the stop within one idle wait; cancelling is only the fallback.
        with suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, timeout=runtime.settings.worker_poll_interval_s + 5)


async def serve_worker(settings: Settings) -> None:
    """``newsdigest worker``: run jobs until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(settings) as runtime, running_worker(runtime):
        await stop.wait()
        log.info("worker.shutdown_requested")
