"""The database worker: claim a job, run its task, record the outcome; survive crashes on both sides.

A job whose worker died (kill -9, a lost machine) stays ``running`` with a lock that stops being
refreshed; every worker gives such jobs back to the queue once the lock is older than
``job_lock_timeout_s``, and the interrupted attempt still counts. Live workers refresh their
locks every third of that timeout, so a slow model call is never mistaken for a dead worker.
On shutdown a worker stops claiming, lets running jobs finish for ``worker_shutdown_grace_s``
and hands the rest back at once rather than leaving them to the lock timeout.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from datetime import timedelta

import structlog

from service import metrics
from service.errors import InputError, NewsdigestError
from service.jobs import story_jobs, tasks
from service.jobs.context import JobContext, Task
from service.jobs.queue import DatabaseJobQueue
from service.store import job_lookup, jobs
from service.store.jobs import JobRecord

log = structlog.get_logger(__name__)

#: Every job kind this worker runs; a distributed engine (issue 7) registers the same functions.
TASKS: dict[str, Task] = {**tasks.TASKS, **story_jobs.STORY_JOBS}


def retry_wait(attempts: int, *, initial_s: float, max_s: float) -> timedelta:
    """Exponential backoff before the next attempt: initial, 2x, 4x ... capped at ``max_s``."""
    return timedelta(seconds=min(initial_s * 2 ** max(attempts - 1, 0), max_s))


class Worker:
    def __init__(self, ctx: JobContext, queue: DatabaseJobQueue, *, worker_id: str | None = None) -> None:
        self.ctx = ctx
        self.queue = queue
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stopping = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._next_sweep = 0.0

    async def run(self) -> None:
        """Claim and run jobs until :meth:`stop`; at most ``worker_concurrency`` at a time."""
        settings = self.ctx.settings
        log.info("worker.started", worker_id=self.id, concurrency=settings.worker_concurrency)
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
            task = asyncio.create_task(self._execute(job), name=f"job-{job.id}")
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
            metrics.QUEUE_DEPTH.set(await job_lookup.count_queued(session=session))
        for job in changed:
            log.warning("job.requeued_stale", job_id=job.id, kind=job.kind, status=job.status, attempts=job.attempts)

    async def _claim(self) -> JobRecord | None:
        async with self.ctx.sessions() as session, session.begin():
            return await jobs.claim_next(session=session, worker_id=self.id, kinds=list(TASKS))

    async def _execute(self, job: JobRecord) -> None:
        with structlog.contextvars.bound_contextvars(job_id=job.id, job_kind=job.kind, attempt=job.attempts):
            log.info("job.started")
            beat = asyncio.create_task(self._heartbeat(job.id))
            try:
                await self._attempt(job)
            except asyncio.CancelledError:
                # Shutdown: hand the job back now rather than leave it to the lock timeout.
                async with self.ctx.sessions() as session, session.begin():
                    await job_lookup.release(session=session, job_id=job.id, worker_id=self.id)
                log.warning("job.released")
                raise
            finally:
                beat.cancel()
                await self.queue.job_changed()

    async def _attempt(self, job: JobRecord) -> None:
        settings = self.ctx.settings
        task = TASKS[job.kind]
        retry, error = True, ""
        try:
            result = await task(self.ctx, dict(job.payload))
        except InputError as exc:
            retry, error = False, exc.detail
        except NewsdigestError as exc:
            error = f"{type(exc).__name__}: {exc.detail}"
        except Exception as exc:  # a bug: recorded and retried a bounded number of times, never silent
            log.exception("job.crashed")
            error = f"internal error ({type(exc).__name__})"
        else:
            async with self.ctx.sessions() as session, session.begin():
                done = await jobs.finish(session=session, job_id=job.id, result=result, worker_id=self.id)
            if done is None:
                log.warning("job.lost_lock")  # requeued as stale meanwhile; the other run reports
                return
            metrics.JOBS.labels(kind=job.kind, status="succeeded").inc()
            log.info("job.succeeded", result=result)
            return
        wait = retry_wait(job.attempts, initial_s=settings.job_retry_initial_wait_s,
                          max_s=settings.job_retry_max_wait_s)
        async with self.ctx.sessions() as session, session.begin():
            failed = await jobs.fail(session=session, job_id=job.id, error=error[:2000], worker_id=self.id,
                                     retry=retry, retry_in=wait)
        if failed is None:
            log.warning("job.lost_lock")
            return
        metrics.JOBS.labels(kind=job.kind, status=failed.status).inc()
        if failed.status == "failed":
            log.warning("job.failed", error=error, attempts=failed.attempts)
        else:
            log.warning("job.retry_scheduled", error=error, retry_in_s=wait.total_seconds())

    async def _heartbeat(self, job_id: str) -> None:
        interval = self.ctx.settings.job_lock_timeout_s / 3
        while True:
            await asyncio.sleep(interval)
            async with self.ctx.sessions() as session, session.begin():
                alive = await jobs.heartbeat(session=session, job_id=job_id, worker_id=self.id)
            if not alive:
                log.warning("job.lost_lock")
                return
