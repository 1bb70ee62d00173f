"""A process that crashed and starts again takes back at once what its previous run held.

The crash is simulated by writing the lock rows a previous run of the process would have left:
running jobs and in-flight Idempotency-Keys under the process's name (``owner``) and another run.
A run is over when its pid is ours now (the restarted container case) or no process has it; a
live pid under the same name (an API and a worker on one host) and other names keep their locks
until the timeouts, which every test here sets far beyond its own length.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.api import create_app
from service.jobs import worker as worker_module
from service.jobs.context import JobContext, LockHolder, Payload, Result, this_run
from service.jobs.runtime import open_runtime, running_worker
from service.settings import Settings
from service.store import idempotency, jobs
from service.store.jobs import JobKind, JobStatus
from service.store.models import IdempotencyKey, utcnow
from tests.jobs.conftest import NoModel, SettingsFor


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A process that stays alive for the test: another process of the same name on this host."""
    process = subprocess.Popen(["sleep", "300"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (a worker killed with -9)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_which_runs_of_its_name_a_process_outlived(live_pid: int, dead_pid: int) -> None:
    me = LockHolder(owner="host/worker", run=this_run())
    assert me.run.startswith(f"{os.getpid()}.")
    assert not me.outlived(me.run)
    assert me.outlived(f"{os.getpid()}.earlier")  # our pid, another start: the old process had it
    assert me.outlived(f"{dead_pid}.earlier")
    assert not me.outlived(f"{live_pid}.earlier")  # alive: maybe another process of this name
    assert not me.outlived("someone-else's-run") and not me.outlived("0.x") and not me.outlived("-1.x")
    assert me.outlived(f"{2**80}.earlier")  # no such pid can exist


def test_the_owner_is_the_host_and_the_configured_name() -> None:
    holder = LockHolder.of_process(Settings(worker_name="api-1"))
    assert holder.owner.endswith("/api-1") and holder.run == this_run()
    assert LockHolder.of_process(Settings()).owner.count("/") == 1  # the name defaults to the host name


async def _running(sessions: async_sessionmaker[AsyncSession], owner: str | None, run: str | None,
                   kind: JobKind = JobKind.ANALYZE_ARTICLE, max_attempts: int = 3) -> str:
    """A job claimed by ``owner``'s ``run`` a moment ago."""
    async with sessions.begin() as session:
        job = await jobs.enqueue(session=session, kind=kind, payload={}, max_attempts=max_attempts)
    async with sessions.begin() as session:
        claimed = await jobs.claim_next(session=session, worker_id=f"{run}:worker", job_id=job.id, owner=owner,
                                        run=run)
    assert claimed is not None and claimed.status == JobStatus.RUNNING
    return job.id


async def _in_flight(sessions: async_sessionmaker[AsyncSession], key: str, owner: str, run: str,
                     api_key_hash: str = "cms-a", request_hash: str = "r") -> None:
    async with sessions.begin() as session:
        state = await idempotency.begin(session=session, key=key, api_key_hash=api_key_hash,
                                        request_hash=request_hash, owner=owner, run=run)
    assert state.state == "new"


async def _key_state(sessions: async_sessionmaker[AsyncSession], key: str) -> str:
    async with sessions.begin() as session:
        return (await idempotency.begin(session=session, key=key, api_key_hash="cms-a", request_hash="r")).state


async def test_a_restarted_process_takes_back_at_once_what_its_previous_run_held(
    sessions: async_sessionmaker[AsyncSession], settings_for: SettingsFor, live_pid: int, dead_pid: int,
) -> None:
    settings = settings_for(worker_name="worker-a", job_lock_timeout_s=120)
    owner = LockHolder.of_process(settings).owner
    restarted_container, killed, alive = f"{os.getpid()}.before", f"{dead_pid}.before", f"{live_pid}.now"
    ours = {
        "container": await _running(sessions, owner, restarted_container),
        "killed": await _running(sessions, owner, killed, kind=JobKind.REFRESH_STORY),
        "last attempt": await _running(sessions, owner, killed, max_attempts=1),
    }
    kept = {
        "same name, alive": await _running(sessions, owner, alive),
        "other name": await _running(sessions, "elsewhere/worker-b", killed),
        "no holder": await _running(sessions, None, None),  # locked before holders were recorded
    }
    await _in_flight(sessions, "ours", owner, restarted_container)
    await _in_flight(sessions, "ours-too", owner, killed)
    await _in_flight(sessions, "same-name-alive", owner, alive)
    await _in_flight(sessions, "other-name", "elsewhere/worker-b", killed)
    await _in_flight(sessions, "answered", owner, killed)
    async with sessions.begin() as session:
        await idempotency.complete(session=session, key="answered", api_key_hash="cms-a", response_status=202,
                                   response_body={"job_id": "j"})

    started = utcnow()
    async with open_runtime(settings, llm=NoModel()) as runtime:
        assert runtime.holder.owner == owner
        async with sessions() as session:
            found = {name: await jobs.get_job(session=session, job_id=job_id)
                     for name, job_id in {**ours, **kept}.items()}

    for name in ("container", "killed"):
        job = found[name]
        assert job is not None and job.status == JobStatus.QUEUED, name
        assert job.attempts == 1 and job.run_after <= utcnow() and "interrupted" in (job.error or ""), job
        assert (job.locked_by, job.lock_owner, job.lock_run) == (None, None, None)
    last = found["last attempt"]
    assert last is not None and last.status == JobStatus.FAILED and last.finished_at is not None
    for name in kept:
        job = found[name]
        assert job is not None and job.status == JobStatus.RUNNING and job.locked_at and job.locked_at < started, name
    assert await _key_state(sessions, "ours") == "new"  # the retry runs, instead of a 409
    assert await _key_state(sessions, "ours-too") == "new"
    assert await _key_state(sessions, "same-name-alive") == "processing"
    async with sessions.begin() as session:
        other = await idempotency.begin(session=session, key="other-name", api_key_hash="cms-a", request_hash="r")
    assert other.state == "processing"
    assert await _key_state(sessions, "answered") == "done"


async def test_the_restarted_worker_resumes_the_interrupted_job_without_waiting_for_the_lock_timeout(
    sessions: async_sessionmaker[AsyncSession], settings_for: SettingsFor, monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_for(worker_name="worker-a", job_lock_timeout_s=600)
    interrupted = await _running(sessions, LockHolder.of_process(settings).owner, f"{os.getpid()}.before",
                                 kind=JobKind.SEND_CALLBACK)

    async def deliver(ctx: JobContext, payload: Payload) -> Result:
        return {"status_code": 204}

    monkeypatch.setitem(worker_module.TASKS, JobKind.SEND_CALLBACK, deliver)
    async with open_runtime(settings, llm=NoModel()) as runtime, running_worker(runtime):
        done = await runtime.queue.wait(interrupted, timeout=10)
    assert done is not None and done.status == JobStatus.SUCCEEDED, done
    assert done.attempts == 2  # the interrupted attempt counts
    assert (done.lock_owner, done.lock_run) == (runtime.holder.owner, runtime.holder.run)


@asynccontextmanager
async def _serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, llm=NoModel())
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


ARTICLE: dict[str, Any] = {
    "id": "restart-1", "outlet": "Outlet", "title": "Budget",
    "body": "The council approved a budget of 12 million euros on Monday. The mayor said schools get most of it.",
}


async def test_the_retry_of_a_request_in_flight_at_the_crash_runs_after_the_restart(
    sessions: async_sessionmaker[AsyncSession], settings_for: SettingsFor, live_pid: int,
) -> None:
    settings = settings_for(worker_name="api-a", run_worker=False)
    owner = LockHolder.of_process(settings).owner
    async with _serving(settings) as client:
        first = await client.post("/v1/articles", json=ARTICLE, headers={"Idempotency-Key": "answered"})
    assert first.status_code == 202, first.text
    async with sessions() as session:
        answered = (await session.scalars(select(IdempotencyKey).where(IdempotencyKey.key == "answered"))).one()
    assert answered.lock_owner is None  # an answered key is nobody's lock
    # The crash: the same request under other keys was in flight in the previous run of this process
    # and in a live process of the same name.
    same = {"api_key_hash": answered.api_key_hash, "request_hash": answered.request_hash}
    await _in_flight(sessions, "in-flight", owner, f"{os.getpid()}.before", **same)
    await _in_flight(sessions, "in-flight-elsewhere", owner, f"{live_pid}.now", **same)

    async with _serving(settings) as client:
        retried = await client.post("/v1/articles", json=ARTICLE, headers={"Idempotency-Key": "in-flight"})
        busy = await client.post("/v1/articles", json=ARTICLE, headers={"Idempotency-Key": "in-flight-elsewhere"})
    assert retried.status_code == 202, retried.text
    assert retried.json()["job_id"] == first.json()["job_id"]  # the same article, its queued job
    assert busy.status_code == 409, busy.text


async def test_a_request_stamps_the_key_with_its_process(
    sessions: async_sessionmaker[AsyncSession], settings_for: SettingsFor, monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_for(worker_name="api-a", run_worker=False)
    seen: list[tuple[str | None, str | None]] = []
    complete = idempotency.complete

    async def look_first(**kwargs: Any) -> None:  # while the request is in flight
        async with sessions() as session:
            row = (await session.scalars(select(IdempotencyKey).where(IdempotencyKey.key == "k"))).one()
            seen.append((row.lock_owner, row.lock_run))
        await complete(**kwargs)

    monkeypatch.setattr(idempotency, "complete", look_first)
    async with _serving(settings) as client:
        response = await client.post("/v1/articles", json=ARTICLE, headers={"Idempotency-Key": "k"})
    assert response.status_code == 202, response.text
    assert seen == [(LockHolder.of_process(settings).owner, this_run())]
