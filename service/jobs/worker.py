"""The database worker: claim a job, run its task, record the outcome; survive crashes on both sides.

A job whose worker died (kill -9, a lost machine) stays ``running`` with a lock that stops being
refreshed. When the dead worker's own process starts again it takes such jobs back at once
(``service.jobs.runtime``); otherwise every worker gives them back to the queue once the lock is
older than ``job_lock_timeout_s``. Either way the interrupted attempt still counts. Live workers
refresh their locks every third of that timeout, so a slow model call is never mistaken for a
dead worker. On shutdown a worker stops claiming, lets running jobs finish for
``worker_shutdown_grace_s`` and hands the rest back at once rather than leaving them to the lock timeout.

A failed attempt is retried after :func:`backoff` while attempts remain, unless no retry can fix
it (:func:`failure`). The engine worker runs its jobs through :meth:`Worker.execute`, so these
rules are the same on both backends.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import structlog

from service import metrics, tracing
from service.errors import InputError, LLMHTTPError, NewsdigestError
from service.jobs import story_jobs, tasks
from service.jobs.context import JobContext, LockHolder, Task
from service.jobs.queue import DatabaseJobQueue
from service.settings import Settings
from service.store import jobs
from service.store.jobs import JobKind, JobRecord, JobStatus

log = structlog.get_logger(__name__)

#: The function each job kind runs, on either backend: the engine worker looks kinds up here too.
TASKS: dict[JobKind, Task] = {
    JobKind.ANALYZE_ARTICLE: tasks.analyze_article,
    JobKind.BUILD_DIGEST: tasks.build_digest,
    JobKind.REFRESH_STORY: story_jobs.refresh_story,
    JobKind.SEND_CALLBACK: story_jobs.send_callback,
}


def backoff(attempts: int, settings: Settings) -> timedelta:
    """The wait before the attempt after number ``attempts``: ``job_retry_initial_wait_s``, doubling
    each time, capped at ``job_retry_max_wait_s``."""
    initial, cap = settings.job_retry_initial_wait_s, settings.job_retry_max_wait_s
    return timedelta(seconds=min(initial * 2 ** max(attempts - 1, 0), cap))


@dataclass(frozen=True)
class Failure:
    """What a failed attempt leaves: the error the job shows, and when to try again (None: never)."""

    error: str
    retry_in: timedelta | None


def failure(exc: Exception, attempts: int, settings: Settings) -> Failure:
    """Judge a failed attempt number ``attempts``: bad input is final, since no retry can fix it;
    anything else (the model, the network, a bug) is retried after :func:`backoff`, unless the error
    knows better (``next_attempt_in(attempts, settings)``: a callback's own schedule, the receiver's
    Retry-After; None there means never again, as after a 410). The table decides whether attempts remain."""
    if isinstance(exc, InputError):
        return Failure(exc.detail, None)
    if isinstance(exc, LLMHTTPError) and exc.status_code in (401, 403):
        # A wrong or revoked key, or a model the key may not use: no retry can fix it, and each costs a call.
        code = f", {exc.code}" if exc.code else ""
        return Failure(f"the model endpoint refused the key ({exc.status_code}{code}): {exc.detail}", None)
    if isinstance(exc, NewsdigestError):
        error = f"{type(exc).__name__}: {exc.detail}"
    else:  # a bug: recorded and retried a bounded number of times, never silent
        error = f"internal error ({type(exc).__name__})"
    own: Callable[[int, Settings], timedelta | None] | None = getattr(exc, "next_attempt_in", None)
    retry_in = own(attempts, settings) if callable(own) else backoff(attempts, settings)
    return Failure(error[:2000], retry_in)


class Worker:
    def __init__(self, ctx: JobContext, queue: DatabaseJobQueue, *, holder: LockHolder | None = None,
                 worker_id: str | None = None) -> None:
        self.ctx = ctx
        self.queue = queue
        self.holder = holder or LockHolder.of_process(ctx.settings)
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stopping = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._next_sweep = 0.0

    async def run(self) -> None:
        """Claim and run jobs until :meth:`stop`; at most ``worker_concurrency`` at a time."""
        settings = self.ctx.settings
        log.info("worker.started", worker_id=self.id, owner=self.holder.owner, concurrency=settings.worker_concurrency)
        slots = asyncio.Semaphore(settings.worker_concurrency)
        while not self._stopping.is_set():
            await slots.acquire()
            try:
                await self._requeue_stale()
                job = await self._claim() if not self._stopping.is_set() else None
            except Exception:  # the database is away for a moment: keep polling, never die quietly
                log.exception("worker.poll_failed")
                job = None
            if job is None:
                slots.release()
                await self._idle(settings.worker_poll_interval_s)
                continue
            task = asyncio.create_task(self.execute(job), name=f"job-{job.id}")
            self._running.add(task)

            def done(finished: asyncio.Task[None]) -> None:
                self._running.discard(finished)
                slots.release()

            task.add_done_callback(done)
        log.info("worker.stopped", worker_id=self.id)

    async def stop(self) -> None:
        """Stop claiming; give running jobs the grace period, then hand them back to the queue."""
        self._stopping.set()
        if not self._running:
            return
        _, pending = await asyncio.wait(set(self._running), timeout=self.ctx.settings.worker_shutdown_grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def execute(self, job: JobRecord) -> None:
        """Run a job this worker has claimed (its ``locked_by`` is :attr:`id`) to its outcome in the row.

        Heartbeats keep the lock while it runs; a failure is retried or failed as :func:`failure`
        says; a cancelled run (shutdown) hands the job back at once.
        """
        with structlog.contextvars.bound_contextvars(job_id=job.id, job_kind=job.kind, attempt=job.attempts), \
                tracing.job_span(str(job.kind), job.payload, id=job.id, attempt=job.attempts):
            log.info("job.started")
            beat = asyncio.create_task(self._heartbeat(job.id))
            try:
                await self._attempt(job)
            except asyncio.CancelledError:
                # Shutdown: hand the job back now rather than leave it to the lock timeout.
                async with self.ctx.sessions() as session, session.begin():
                    await jobs.release(session=session, job_id=job.id, worker_id=self.id)
                log.warning("job.released")
                raise
            finally:
                beat.cancel()
                await self.queue.job_changed()

    async def _idle(self, seconds: float) -> None:
        stop = asyncio.create_task(self._stopping.wait())
        work = asyncio.create_task(self.queue.wait_for_work(seconds))
        await asyncio.wait({stop, work}, return_when=asyncio.FIRST_COMPLETED)
        for pending in (stop, work):
            pending.cancel()

    async def _requeue_stale(self) -> None:
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + self.ctx.settings.job_lock_timeout_s / 3
        older_than = timedelta(seconds=self.ctx.settings.job_lock_timeout_s)
        async with self.ctx.sessions() as session, session.begin():
            changed = await jobs.requeue_stale(session=session, older_than=older_than)
            metrics.QUEUE_DEPTH.set(await jobs.count_queued(session=session))
        for job in changed:
            log.warning("job.requeued_stale", job_id=job.id, kind=job.kind, status=job.status, attempts=job.attempts)

    async def _claim(self) -> JobRecord | None:
        async with self.ctx.sessions() as session, session.begin():
            return await jobs.claim_next(session=session, worker_id=self.id, kinds=list(TASKS),
                                         owner=self.holder.owner, run=self.holder.run)

    async def _attempt(self, job: JobRecord) -> None:
        task = TASKS[JobKind(job.kind)]
        try:
            result = await task(self.ctx, dict(job.payload))
        except Exception as exc:
            if not isinstance(exc, NewsdigestError):
                log.exception("job.crashed")
            outcome = failure(exc, job.attempts, self.ctx.settings)
        else:
            async with self.ctx.sessions() as session, session.begin():
                done = await jobs.finish(session=session, job_id=job.id, result=result, worker_id=self.id)
            if done is None:
                log.warning("job.lost_lock")  # requeued as stale meanwhile; the other run reports
                return
            metrics.JOBS.labels(kind=job.kind, status=JobStatus.SUCCEEDED).inc()
            log.info("job.succeeded", result=result)
            return
        async with self.ctx.sessions() as session, session.begin():
            failed = await jobs.fail(session=session, job_id=job.id, error=outcome.error, worker_id=self.id,
                                     retry_in=outcome.retry_in)
        if failed is None:
            log.warning("job.lost_lock")
            return
        metrics.JOBS.labels(kind=job.kind, status=failed.status).inc()
        if failed.status == JobStatus.FAILED:
            log.warning("job.failed", error=outcome.error, attempts=failed.attempts)
        else:
            wait = outcome.retry_in or timedelta(0)
            log.warning("job.retry_scheduled", error=outcome.error, retry_in_s=wait.total_seconds())

    async def _heartbeat(self, job_id: str) -> None:
        interval = self.ctx.settings.job_lock_timeout_s / 3
        while True:
            await asyncio.sleep(interval)
            async with self.ctx.sessions() as session, session.begin():
                alive = await jobs.heartbeat(session=session, job_id=job_id, worker_id=self.id)
            if not alive:
                log.warning("job.lost_lock")
                return
