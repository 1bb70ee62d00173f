"""The worker: how it judges a failed attempt, and the outcome it leaves in the row (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.errors import InputError, LLMHTTPError, LLMUnavailable, NotFoundError
from service.jobs import worker as worker_module
from service.jobs.context import JobContext, LockHolder, Payload, Result
from service.jobs.queue import DatabaseJobQueue
from service.jobs.worker import Failure, Worker, backoff, failure
from service.settings import Settings
from service.store import jobs
from service.store.jobs import JobKind, JobStatus
from service.store.models import utcnow
from tests.jobs.conftest import SettingsFor


def test_backoff_doubles_from_the_setting_and_stops_at_the_cap() -> None:
    settings = Settings(job_retry_initial_wait_s=2, job_retry_max_wait_s=7)
    assert [backoff(n, settings).total_seconds() for n in (1, 2, 3, 4, 30)] == [2, 4, 7, 7, 7]
    assert backoff(1, Settings(job_retry_initial_wait_s=0)) == timedelta(0)  # retry at once


@pytest.mark.parametrize(("exc", "expected"), [
    # Bad input: no retry can fix it.
    (InputError("payload has no article_id"), Failure("payload has no article_id", None)),
    (NotFoundError("article a1 was deleted"), Failure("article a1 was deleted", None)),
    # The model or the network: worth another attempt, after the backoff for the attempt that failed.
    (LLMUnavailable("endpoint refused the connection"),
     Failure("LLMUnavailable: endpoint refused the connection", timedelta(seconds=6))),
    # A bug: retried a bounded number of times, and its message (it may quote data) is not shown.
    (KeyError("some payload value"), Failure("internal error (KeyError)", timedelta(seconds=6))),
])
def test_a_failed_attempt_is_final_only_for_bad_input(exc: Exception, expected: Failure) -> None:
    settings = Settings(job_retry_initial_wait_s=3, job_retry_max_wait_s=60)
    assert failure(exc, 2, settings) == expected


def test_a_long_error_is_cut_for_the_row() -> None:
    judged = failure(LLMUnavailable("x" * 5000), 1, Settings())
    assert len(judged.error) == 2000 and judged.retry_in == backoff(1, Settings())


def _scripted(outcomes: list[BaseException | Result]) -> Callable[[JobContext, Payload], Any]:
    """A task answering each attempt with the next outcome: raise it, or return it."""
    remaining = list(outcomes)

    async def task(ctx: JobContext, payload: Payload) -> Result:
        outcome = remaining.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return task


async def _claim(sessions: async_sessionmaker[AsyncSession], worker: Worker, *,
                 now: Any = None) -> jobs.JobRecord | None:
    async with sessions.begin() as session:
        return await jobs.claim_next(session=session, worker_id=worker.id, owner=worker.holder.owner,
                                     run=worker.holder.run, now=now)


async def test_a_retried_job_waits_the_backoff_then_fails_when_attempts_run_out(
    sessions: async_sessionmaker[AsyncSession], queue: DatabaseJobQueue, settings_for: SettingsFor,
    context_for: Callable[[Settings], JobContext], monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_for(job_retry_initial_wait_s=30, job_retry_max_wait_s=45)
    worker = Worker(context_for(settings), queue)
    down = LLMUnavailable("model endpoint down")
    monkeypatch.setitem(worker_module.TASKS, JobKind.SEND_CALLBACK, _scripted([down, down, down]))
    queued = await queue.submit(JobKind.SEND_CALLBACK, {"digest_id": "d1"})
    waits = []
    for attempt in (1, 2, 3):
        claimed = await _claim(sessions, worker, now=utcnow() + timedelta(minutes=5 * attempt))
        assert claimed is not None and claimed.id == queued.id and claimed.attempts == attempt
        await worker.execute(claimed)
        row = await queue.get(queued.id)
        assert row is not None and row.error == "LLMUnavailable: model endpoint down"
        waits.append(row.run_after - row.updated_at if row.status == JobStatus.QUEUED else None)
    assert waits == [timedelta(seconds=30), timedelta(seconds=45), None]  # 30, 60 capped at 45, then no attempt left
    assert row.status == JobStatus.FAILED and row.finished_at is not None and row.attempts == 3


async def test_bad_input_fails_the_job_at_its_first_attempt(
    sessions: async_sessionmaker[AsyncSession], queue: DatabaseJobQueue, settings_for: SettingsFor,
    context_for: Callable[[Settings], JobContext], monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = Worker(context_for(settings_for()), queue)
    monkeypatch.setitem(worker_module.TASKS, JobKind.BUILD_DIGEST,
                        _scripted([NotFoundError("unknown article id(s): a9")]))
    queued = await queue.submit(JobKind.BUILD_DIGEST, {"article_ids": ["a9"]})
    claimed = await _claim(sessions, worker)
    assert claimed is not None
    await worker.execute(claimed)
    row = await queue.get(queued.id)
    assert row is not None and (row.status, row.attempts, row.error) == (
        JobStatus.FAILED, 1, "unknown article id(s): a9")


async def test_a_worker_runs_a_job_to_success_and_records_who_ran_it(
    sessions: async_sessionmaker[AsyncSession], queue: DatabaseJobQueue, settings_for: SettingsFor,
    context_for: Callable[[Settings], JobContext], monkeypatch: pytest.MonkeyPatch,
) -> None:
    holder = LockHolder(owner="test-host/worker-a", run="1.first")
    worker = Worker(context_for(settings_for()), queue, holder=holder)
    monkeypatch.setitem(worker_module.TASKS, JobKind.ANALYZE_ARTICLE,
                        _scripted([LLMUnavailable("a blip"), {"article_id": "a1"}]))
    queued = await queue.submit(JobKind.ANALYZE_ARTICLE, {"article_id": "a1"})
    running = asyncio.create_task(worker.run())
    try:
        done = await queue.wait(queued.id, timeout=15)
    finally:
        await worker.stop()
        await asyncio.wait_for(running, timeout=5)
    assert done is not None and done.status == JobStatus.SUCCEEDED and done.attempts == 2
    assert done.result == {"article_id": "a1"} and done.error is None
    assert (done.locked_by, done.lock_owner, done.lock_run) == (worker.id, "test-host/worker-a", "1.first")


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_ends_the_job_at_once_with_the_endpoints_code(status: int) -> None:
    refused = LLMHTTPError(f"model endpoint answered {status} (invalid_api_key)", status_code=status,
                           code="invalid_api_key")
    decided = failure(refused, 1, Settings())
    assert decided.retry_in is None
    assert f"({status}, invalid_api_key)" in decided.error


def test_an_overloaded_endpoint_is_still_retried() -> None:
    busy = LLMHTTPError("model endpoint answered 503", status_code=503)
    assert failure(busy, 1, Settings()).retry_in is not None
