"""How the API hands work to workers: a small interface and its database implementation.

A job is a row in the jobs table on every backend: the database worker polls for rows, and the
procrastinate backend is handed each row by a trigger when it commits (``service.jobs.engine``),
so :class:`DatabaseJobQueue` serves both and ``GET /v1/jobs/{id}`` reads the same record. Routes
see only the :class:`JobQueue` protocol (``submit``, ``get``, ``wait``), which keeps the worker's
in-process wake-ups (``wait_for_work``, ``job_changed``) out of their reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.store import jobs
from service.store.jobs import JobKind, JobRecord, JobSpec

# Waiters re-read the database at least this often: a job may finish in another process.
_WAIT_POLL_S = 0.25


class JobQueue(Protocol):
    async def submit(self, kind: JobKind | str, payload: dict[str, Any], *, dedupe_key: str | None = None,
                     session: AsyncSession | None = None) -> JobRecord:
        """Queue a job of ``kind`` (a :class:`JobKind`, or its value). With ``session`` it joins the
        caller's transaction and runs once that commits."""
        ...

    async def submit_many(self, specs: Sequence[JobSpec], *, session: AsyncSession) -> list[JobRecord]:
        """``submit`` for each spec, in order, in the caller's transaction and in a few statements."""
        ...

    async def get(self, job_id: str) -> JobRecord | None: ...

    async def wait(self, job_id: str, timeout: float) -> JobRecord | None:
        """The job once it is done, or as it stands when ``timeout`` seconds have passed."""
        ...


class DatabaseJobQueue:
    """Jobs as rows, claimed by workers polling the table; in-process workers are woken at once."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, max_attempts: int) -> None:
        self._sessions = sessions
        self._max_attempts = max_attempts
        self._submitted = asyncio.Event()
        self._changed = asyncio.Condition()

    async def submit(self, kind: JobKind | str, payload: dict[str, Any], *, dedupe_key: str | None = None,
                     session: AsyncSession | None = None) -> JobRecord:
        if session is None:
            async with self._sessions() as own, own.begin():
                job = await jobs.enqueue(session=own, kind=kind, payload=payload, dedupe_key=dedupe_key,
                                         max_attempts=self._max_attempts)
            self._submitted.set()
            return job
        job = await jobs.enqueue(session=session, kind=kind, payload=payload, dedupe_key=dedupe_key,
                                 max_attempts=self._max_attempts)
        self._wake_after_commit(session)
        return job

    async def submit_many(self, specs: Sequence[JobSpec], *, session: AsyncSession) -> list[JobRecord]:
        queued = await jobs.enqueue_many(session=session, specs=specs)
        self._wake_after_commit(session)
        return queued

    def _wake_after_commit(self, session: AsyncSession) -> None:
        # Waking the worker before the commit would only let it find nothing and go back to sleep.
        event.listen(session.sync_session, "after_commit", lambda _: self._submitted.set(), once=True)

    async def get(self, job_id: str) -> JobRecord | None:
        async with self._sessions() as session:
            return await jobs.get_job(session=session, job_id=job_id)

    async def wait(self, job_id: str, timeout: float) -> JobRecord | None:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.get(job_id)
            left = deadline - time.monotonic()
            if job is None or job.done or left <= 0:
                return job
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=min(_WAIT_POLL_S, left))

    async def wait_for_work(self, timeout: float) -> None:
        """Sleep until a job is submitted here or ``timeout`` passes (workers still poll: other processes submit)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._submitted.wait(), timeout=timeout)
        self._submitted.clear()

    async def job_changed(self) -> None:
        """A worker in this process finished an attempt: wake the waiters."""
        async with self._changed:
            self._changed.notify_all()
