"""Several real ``newsdigest worker`` processes on the procrastinate backend drain one queue.

Every job runs and succeeds once: a job is claimed through its row, so none runs twice and none is
lost, also when a worker is SIGKILLed in the middle of its model calls. Refreshes of one story
never overlap, however the refresh events interleave.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import socket
import time

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.jobs import story_jobs
from service.store.jobs import JobKind
from tests.databases import OWN_POSTGRES, only_on
from tests.fake_openai import FaultServer
from tests.scale.conftest import (
    Workers,
    add_articles,
    all_jobs,
    answering,
    first_line,
    settings_for,
    wait_for_engine_workers,
    wait_until_done,
    worker_env,
)

pytest.importorskip("procrastinate", reason="the scale extra is not installed: pip install -e '.[scale]'")
pytestmark = only_on(OWN_POSTGRES)


async def engine_jobs_by_status(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with sessions() as session:
        rows = await session.execute(text(
            "SELECT status::text, count(*) FROM procrastinate.procrastinate_jobs GROUP BY status"))
        return {status: count for status, count in rows}


async def test_two_workers_drain_the_queue_each_job_once(
    database_url: str, sessions: async_sessionmaker[AsyncSession], fault_server: FaultServer,
    workers: Workers,
) -> None:
    stub = answering(fault_server, 0.3)
    # Half queued before any engine worker exists: the first one to start dispatches the backlog.
    early = await add_articles(sessions, range(1, 7))
    env = worker_env(database_url, stub)
    workers.start(env)
    workers.start(env)
    late = await add_articles(sessions, range(7, 13))

    done = await wait_until_done(sessions, 12, workers)

    assert [j.status for j in done] == ["succeeded"] * 12, workers.logs()
    assert [j.attempts for j in done] == [1] * 12
    for n in range(1, 13):
        assert stub.count("KeyFactsDraft", first_line(n)) == 1, n
        assert stub.count("SentimentDraft", first_line(n)) == 1, n
    assert {j.locked_by.split("@")[1] for j in done if j.locked_by} == {
        f"{socket.gethostname()}:{p.pid}" for p in workers.procs}, "both workers took jobs"
    async with sessions() as session:
        extracted = (await session.execute(text("SELECT count(DISTINCT article_id) FROM extractions"))).scalar()
    assert extracted == len(early) + len(late)
    # Successful engine jobs are deleted: the jobs table is the record.
    assert await engine_jobs_by_status(sessions) == {}


async def test_a_sigkilled_worker_loses_no_job_and_none_runs_twice(
    database_url: str, sessions: async_sessionmaker[AsyncSession], fault_server: FaultServer,
    workers: Workers,
) -> None:
    stub = answering(fault_server, 2.0)
    env = worker_env(database_url, stub)
    victim = workers.start(env)
    survivor = workers.start(env)
    stored = await add_articles(sessions, range(1, 11))
    number_of = {record.id: n for n, record in zip(range(1, 11), stored, strict=True)}

    # Wait until the victim is inside model calls, then kill it without a chance to clean up.
    deadline = time.monotonic() + 30
    interrupted: set[str] = set()
    while not interrupted:
        assert time.monotonic() < deadline, workers.logs()
        interrupted = {j.id for j in await all_jobs(sessions)
                       if j.status == "running" and j.locked_by and j.locked_by.endswith(f":{victim.pid}")}
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # its requests are at the model now
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    # What it held when it died, not when we looked: it may have claimed more in the meantime.
    interrupted = {j.id for j in await all_jobs(sessions)
                   if j.status == "running" and j.locked_by and j.locked_by.endswith(f":{victim.pid}")}

    done = await wait_until_done(sessions, 10, workers, timeout=90)

    assert [j.status for j in done] == ["succeeded"] * 10, workers.logs()
    for job in done:
        # The interrupted attempt counts; every other job ran exactly once.
        assert job.attempts == (2 if job.id in interrupted else 1), (job, workers.logs())
        if job.id in interrupted:  # finished by the survivor
            assert job.locked_by and job.locked_by.endswith(f":{survivor.pid}")
    # Every article reached the model once, and again only when its first attempt died with the victim
    # (a job the victim had claimed but not yet sent when it died reached the model once).
    again = {number_of[j.payload["article_id"]] for j in done if j.id in interrupted}
    for n in range(1, 11):
        calls = stub.count("KeyFactsDraft", first_line(n))
        assert calls in ((1, 2) if n in again else (1,)), (n, calls)
    # The victim's engine jobs stalled and were failed by the survivor's sweep; the rest succeeded.
    assert await engine_jobs_by_status(sessions) == {"failed": len(interrupted)}


async def test_refreshes_of_one_story_never_overlap(
    database_url: str, sessions: async_sessionmaker[AsyncSession], fault_server: FaultServer,
    workers: Workers,
) -> None:
    stub = answering(fault_server, 0.3)
    stories = ["story-a", "story-b", "story-c"]
    for i, story in enumerate(stories):
        await add_articles(sessions, range(10 * i + 1, 10 * i + 3), story_id=story, analyse=False)
    # Slow heartbeats: a job's locked_at stays the moment it was claimed.
    env = worker_env(database_url, stub, worker_concurrency=3, job_lock_timeout_s=60)
    workers.start(env)
    workers.start(env)
    await wait_for_engine_workers(sessions, 2, workers)
    settings = settings_for(database_url)

    # Bursts of refresh events for every story while refreshes run: each event after the first
    # of a burst joins the queued refresh; one that comes while a refresh runs queues another.
    for _ in range(12):
        async with sessions() as session, session.begin():
            for story in stories:
                await story_jobs.schedule_refresh(session=session, story_id=story, settings=settings, delay_s=0)
        await asyncio.sleep(0.25)

    done = await wait_until_done(sessions, 1, workers, timeout=90)

    refreshes = [j for j in done if j.kind == JobKind.REFRESH_STORY]
    assert {j.status for j in refreshes} == {"succeeded"}, workers.logs()
    contended = 0
    for story in stories:
        runs = sorted((j for j in refreshes if j.payload["story_id"] == story), key=lambda j: j.locked_at or 0)
        assert len(runs) >= 2, story
        for before, after in itertools.pairwise(runs):
            assert before.finished_at and after.locked_at and before.finished_at <= after.locked_at, (
                f"{story}: {before.id} ran until {before.finished_at}, {after.id} started at {after.locked_at}")
            contended += after.created_at < before.finished_at  # queued while the other one ran
        # The engine's lock, not the job's own fallback, kept them apart: none had to step back.
        assert not any("deferred_to" in (j.result or {}) for j in runs)
    assert contended, "no refresh was ever queued while another of its story ran: the test proved nothing"


async def test_a_stopped_worker_hands_its_running_job_back(
    database_url: str, sessions: async_sessionmaker[AsyncSession], fault_server: FaultServer,
    workers: Workers,
) -> None:
    """SIGTERM: the job outlasting the grace period goes back to the queue at once, not after a timeout."""
    stub = answering(fault_server, 4.0)
    leaving = workers.start(worker_env(database_url, stub, worker_shutdown_grace_s=0.5, job_lock_timeout_s=60))
    await add_articles(sessions, range(1, 2))
    deadline = time.monotonic() + 30
    while not any(j.status == "running" for j in await all_jobs(sessions)):
        assert time.monotonic() < deadline, workers.logs()
        await asyncio.sleep(0.05)
    leaving.send_signal(signal.SIGTERM)
    assert leaving.wait(timeout=20) == 0, workers.logs()
    (handed_back,) = await all_jobs(sessions)
    assert (handed_back.status, handed_back.attempts, handed_back.error) == ("queued", 1, None)

    workers.start(worker_env(database_url, stub, job_lock_timeout_s=60))
    (done,) = await wait_until_done(sessions, 1, workers)
    assert (done.status, done.attempts) == ("succeeded", 2)
    assert await engine_jobs_by_status(sessions) == {"aborted": 1}


async def test_a_worker_restarted_under_its_name_resumes_its_jobs_at_once(
    database_url: str, sessions: async_sessionmaker[AsyncSession], fault_server: FaultServer,
    workers: Workers,
) -> None:
    """SIGKILL, then the same worker name starts again: the rows it held go back to the queue at start-up,
    long before their locks time out (60 s here), and run once more."""
    stub = answering(fault_server, 1.0)
    env = worker_env(database_url, stub, worker_name="engine-a", job_lock_timeout_s=60)
    victim = workers.start(env)
    await add_articles(sessions, range(1, 3))
    deadline = time.monotonic() + 30
    interrupted: set[str] = set()
    # Both rows held: a job the engine handed over but that was not claimed yet when the process died is
    # the engine's stalled-job sweep's to recover (after the lock timeout), not the start-up recovery's.
    while len(interrupted) < 2:
        assert time.monotonic() < deadline, workers.logs()
        interrupted = {j.id for j in await all_jobs(sessions)
                       if j.status == "running" and j.locked_by and j.locked_by.endswith(f":{victim.pid}")}
        await asyncio.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    interrupted = {j.id for j in await all_jobs(sessions) if j.status == "running"}

    restarted_at = time.monotonic()
    successor = workers.start(env)
    done = await wait_until_done(sessions, 2, workers, timeout=45)

    assert time.monotonic() - restarted_at < 45
    assert [j.status for j in done] == ["succeeded"] * 2, workers.logs()
    for job in done:
        assert job.attempts == (2 if job.id in interrupted else 1), (job, workers.logs())
        assert job.locked_by and job.locked_by.endswith(f":{successor.pid}")
    assert "runtime.previous_run_recovered" in workers.logs()
