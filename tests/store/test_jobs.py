from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.jobs.worker import backoff
from service.settings import Settings
from service.store import jobs
from service.store.models import utcnow
from tests.databases import POSTGRES, only_on


def _settings() -> Settings:
    return Settings(job_retry_initial_wait_s=5, job_retry_max_wait_s=600)


async def test_enqueue_coalesces_queued_jobs_with_the_same_key(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        first = await jobs.enqueue(session=session, kind="refresh_story", payload={"story_id": "s"}, dedupe_key="s")
        again = await jobs.enqueue(session=session, kind="refresh_story", payload={"story_id": "x"}, dedupe_key="s")
        other = await jobs.enqueue(session=session, kind="refresh_story", payload={"story_id": "t"}, dedupe_key="t")
        plain = [await jobs.enqueue(session=session, kind="send_callback", payload={}) for _ in range(2)]
    assert again == first and again.payload == {"story_id": "s"}
    assert other.id != first.id and plain[0].id != plain[1].id
    assert first.status == "queued" and first.attempts == 0 and first.result is None
    async with sessions.begin() as session:
        claimed = await jobs.claim_next(session=session, worker_id="w", kinds=["refresh_story"])
        assert claimed is not None and claimed.id == first.id
    async with sessions.begin() as session:
        # The queued one is now running and may have read too early: a new request is a new job.
        fresh = await jobs.enqueue(session=session, kind="refresh_story", payload={"story_id": "s"}, dedupe_key="s")
    assert fresh.id != first.id


async def test_concurrent_enqueues_with_one_key_make_one_job(sessions: async_sessionmaker[AsyncSession]) -> None:
    async def enqueue() -> str:
        async with sessions.begin() as session:
            job = await jobs.enqueue(session=session, kind="build_digest", payload={}, dedupe_key="story:9")
            await asyncio.sleep(0.01)  # keep the transaction open while the other one tries
            return job.id

    ids = await asyncio.gather(*(enqueue() for _ in range(5)))
    assert len(set(ids)) == 1


async def test_unknown_kind_is_refused(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        with pytest.raises(ValueError, match="unknown job kind"):
            await jobs.enqueue(session=session, kind="mine_bitcoin", payload={})  # type: ignore[arg-type]


async def test_two_workers_never_claim_the_same_job(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        queued = {(await jobs.enqueue(session=session, kind="analyze_article", payload={"n": n})).id
                  for n in range(20)}

    async def worker(name: str) -> list[str]:
        taken: list[str] = []
        while True:
            async with sessions.begin() as session:
                job = await jobs.claim_next(session=session, worker_id=name)
                if job is None:
                    return taken
                assert job.status == "running" and job.locked_by == name and job.attempts == 1
                taken.append(job.id)
                await asyncio.sleep(0.005)  # hold the claim so the other worker must skip it

    claims = await asyncio.gather(worker("w1"), worker("w2"))
    every = claims[0] + claims[1]
    assert sorted(every) == sorted(queued)  # each job claimed exactly once


@only_on(POSTGRES)
async def test_a_claim_skips_jobs_another_worker_holds(sessions: async_sessionmaker[AsyncSession]) -> None:
    """PostgreSQL only: SQLite admits one writer, so there the second claim waits for the commit."""
    async with sessions.begin() as session:
        for n in range(2):
            await jobs.enqueue(session=session, kind="analyze_article", payload={"n": n})
    async with sessions.begin() as holder, sessions.begin() as other:
        held = await jobs.claim_next(session=holder, worker_id="w1")
        # Without SKIP LOCKED this would wait for the holder's commit (and then find nothing).
        taken = await asyncio.wait_for(jobs.claim_next(session=other, worker_id="w2"), timeout=5)
        assert held is not None and taken is not None and held.id != taken.id


async def test_claim_respects_run_after_and_order(sessions: async_sessionmaker[AsyncSession]) -> None:
    now = utcnow()
    async with sessions.begin() as session:
        later = await jobs.enqueue(session=session, kind="send_callback", payload={}, run_after=now + timedelta(1))
        due = await jobs.enqueue(session=session, kind="send_callback", payload={}, run_after=now - timedelta(1))
    async with sessions.begin() as session:
        first = await jobs.claim_next(session=session, worker_id="w", now=now)
        assert first is not None and first.id == due.id
        assert await jobs.claim_next(session=session, worker_id="w", now=now) is None
        assert await jobs.claim_next(session=session, worker_id="w", kinds=["build_digest"], now=now) is None
        claimed = await jobs.claim_next(session=session, worker_id="w", now=now + timedelta(days=2))
        assert claimed is not None and claimed.id == later.id


async def test_requeue_stale_returns_abandoned_jobs(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        retry = await jobs.enqueue(session=session, kind="analyze_article", payload={}, max_attempts=3)
        last = await jobs.enqueue(session=session, kind="analyze_article", payload={}, max_attempts=1)
        for _ in range(2):
            await jobs.claim_next(session=session, worker_id="dead")
    live = utcnow() + timedelta(seconds=1)
    async with sessions.begin() as session:
        assert await jobs.requeue_stale(session=session, older_than=timedelta(minutes=5), now=live) == []
    async with sessions.begin() as session:
        changed = await jobs.requeue_stale(session=session, older_than=timedelta(minutes=5),
                                           now=live + timedelta(minutes=10))
    by_id = {job.id: job for job in changed}
    assert by_id[retry.id].status == "queued" and by_id[retry.id].attempts == 1
    assert by_id[retry.id].locked_by is None and "stopped responding" in (by_id[retry.id].error or "")
    assert by_id[last.id].status == "failed" and by_id[last.id].finished_at is not None
    async with sessions.begin() as session:
        again = await jobs.claim_next(session=session, worker_id="alive", now=live + timedelta(minutes=11))
        assert again is not None and again.id == retry.id and again.attempts == 2


async def test_finish_fail_and_heartbeat(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        job = await jobs.enqueue(session=session, kind="build_digest", payload={"story_id": "s"}, max_attempts=2)
        await jobs.claim_next(session=session, worker_id="w")
    async with sessions.begin() as session:
        assert await jobs.heartbeat(session=session, job_id=job.id, worker_id="w")
        assert not await jobs.heartbeat(session=session, job_id=job.id, worker_id="intruder")
        assert await jobs.finish(session=session, job_id=job.id, worker_id="intruder") is None
        retried = await jobs.fail(session=session, job_id=job.id, error="LLM timed out", worker_id="w",
                                  retry_in=backoff(1, _settings()))
    assert retried is not None and retried.status == "queued" and retried.error == "LLM timed out"
    assert retried.run_after >= retried.updated_at + backoff(1, _settings())
    async with sessions.begin() as session:
        assert await jobs.claim_next(session=session, worker_id="w") is None  # backing off
        claimed = await jobs.claim_next(session=session, worker_id="w", now=retried.run_after)
        assert claimed is not None and claimed.attempts == 2
        failed = await jobs.fail(session=session, job_id=job.id, error="still broken", retry_in=backoff(2, _settings()))
    assert failed is not None and failed.status == "failed" and failed.done and failed.finished_at is not None

    async with sessions.begin() as session:
        ok = await jobs.enqueue(session=session, kind="build_digest", payload={})
        await jobs.claim_next(session=session, worker_id="w")
        done = await jobs.finish(session=session, job_id=ok.id, result={"digest_id": "d1"}, worker_id="w")
        assert done is not None and done.status == "succeeded" and done.result == {"digest_id": "d1"}
        assert await jobs.finish(session=session, job_id=ok.id) is None  # not running any more
        assert await jobs.get_job(session=session, job_id=ok.id) == done
        assert await jobs.get_job(session=session, job_id="missing") is None


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff(n, _settings()).total_seconds() for n in (1, 2, 3)] == [5, 10, 20]
    assert backoff(30, _settings()) == timedelta(minutes=10)


async def test_a_named_job_is_claimed_whatever_its_run_after(sessions: async_sessionmaker[AsyncSession]) -> None:
    """The engine's claim: procrastinate delivers a row once it is due by the database's clock."""
    async with sessions.begin() as session:
        later = await jobs.enqueue(session=session, kind="send_callback", payload={},
                                   run_after=utcnow() + timedelta(minutes=5))
    async with sessions.begin() as session:
        assert await jobs.claim_next(session=session, worker_id="w", kinds=["build_digest"], job_id=later.id) is None
        claimed = await jobs.claim_next(session=session, worker_id="pjob:7@h:1", job_id=later.id, owner="h/w",
                                        run="1.a")
        assert claimed is not None and claimed.id == later.id and claimed.attempts == 1
        assert (claimed.locked_by, claimed.lock_owner, claimed.lock_run) == ("pjob:7@h:1", "h/w", "1.a")
        assert await jobs.claim_next(session=session, worker_id="w2", job_id=later.id) is None  # delivered twice


async def test_requeue_takes_back_only_the_jobs_its_conditions_name(sessions: async_sessionmaker[AsyncSession]) -> None:
    held = {}
    async with sessions.begin() as session:
        for name, owner, run, worker in [("old", "h/a", "1.x", "pjob:1@h:1"), ("live", "h/a", "2.y", "pjob:2@h:2"),
                                         ("other", "h/b", "1.x", "pjob:12@h:3")]:
            job = await jobs.enqueue(session=session, kind="analyze_article", payload={})
            held[name] = await jobs.claim_next(session=session, worker_id=worker, job_id=job.id, owner=owner, run=run)
    async with sessions.begin() as session:
        assert await jobs.held_runs(session=session, owner="h/a") == {"1.x", "2.y"}
        with pytest.raises(ValueError, match="at least one condition"):
            await jobs.requeue(session=session, reason="r")
        assert await jobs.requeue(session=session, reason="r", owner="h/a", runs=[]) == []
        (old,) = await jobs.requeue(session=session, reason="restarted", owner="h/a", runs=["1.x"])
        # A prefix is matched as text: "pjob:1@" is not "pjob:12@".
        (other,) = await jobs.requeue(session=session, reason="stalled", locked_by_prefix="pjob:12@")
        assert await jobs.requeue(session=session, reason="r", job_id=held["live"].id, locked_by_prefix="pjob:9@") == []
        assert await jobs.held_runs(session=session, owner="h/a") == {"2.y"}
    assert (old.id, old.status, old.error, old.attempts) == (held["old"].id, "queued", "restarted", 1)
    assert old.lock_run is None
    assert (other.id, other.status, other.error) == (held["other"].id, "queued", "stalled")


async def test_release_hands_a_job_back_without_an_error(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        job = await jobs.enqueue(session=session, kind="build_digest", payload={})
        await jobs.claim_next(session=session, worker_id="w", owner="h/a", run="1.x")
    async with sessions.begin() as session:
        assert not await jobs.release(session=session, job_id=job.id, worker_id="intruder")
        assert await jobs.release(session=session, job_id=job.id, worker_id="w")
        back = await jobs.get_job(session=session, job_id=job.id)
    assert back is not None and (back.status, back.attempts, back.error, back.locked_by, back.lock_owner) == (
        "queued", 1, None, None, None)


async def test_lookups_by_dedupe_key_and_counts(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        a = await jobs.enqueue(session=session, kind="analyze_article", payload={}, dedupe_key="analyze_article:a1:h")
        await jobs.enqueue(session=session, kind="analyze_article", payload={}, dedupe_key="analyze_article:a10:h")
        r = await jobs.enqueue(session=session, kind="refresh_story", payload={}, dedupe_key="refresh:s")
        await jobs.claim_next(session=session, worker_id="w", job_id=r.id)
    async with sessions() as session:
        found = await jobs.latest_by_dedupe_key(session=session, dedupe_key="analyze_article:a1:", prefix=True)
        assert found is not None and found.id == a.id
        # "_" and "%" in a prefix are text, not wildcards.
        assert await jobs.latest_by_dedupe_key(session=session, dedupe_key="analyze%", prefix=True) is None
        assert await jobs.latest_by_dedupe_key(session=session, dedupe_key="refresh:s") == await jobs.get_job(
            session=session, job_id=r.id)
        assert await jobs.count_queued(session=session) == 2
        assert await jobs.count_running(session=session, kind=jobs.JobKind.REFRESH_STORY, dedupe_key="refresh:s") == 1
        assert [j.kind for j in await jobs.list_jobs(session=session)] == ["analyze_article"] * 2 + ["refresh_story"]
