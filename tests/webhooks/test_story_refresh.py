"""Living story digests: a burst of events makes one refresh, deletions leave the digest, one build at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest

from service.jobs.context import JobContext
from service.jobs.runtime import running_worker
from service.jobs.story_jobs import refresh_story
from service.settings import Settings
from service.store import digests, jobs, webhooks
from service.store.models import utcnow
from service.webhooks import DeliveryJanitor
from tests.factories import analysis, article, digest_answer, facts_answer
from tests.fake_openai import FaultServer, delay
from tests.running_app import Hooks, open_hooks

STORY = "council-budget"


@pytest.fixture
async def hooks(database_url: str, hook_settings: Callable[..., Settings],
                fault_server: FaultServer) -> AsyncIterator[Hooks]:
    """With the worker; a 1.5 s debounce, far longer than a burst of ten events takes in process."""
    async for running in open_hooks(hook_settings(database_url, story_refresh_delay_s=1.5), fault_server):
        yield running


async def _current(hooks: Hooks, story_id: str = STORY) -> Any:
    async with hooks.app.state.runtime.sessions() as session:
        return await digests.current_for_story(session=session, story_id=story_id)


async def test_burst_of_ten_events_makes_one_refresh(database_url: str, hook_settings: Callable[..., Settings],
                                                     fault_server: FaultServer) -> None:
    # The worker starts after the burst, so a slow machine cannot let the debounce run out mid-burst:
    # the ten analyses are then due before the refresh, which finds all of them cached.
    settings = hook_settings(database_url, run_worker=False, story_refresh_delay_s=2.0)
    async for hooks in open_hooks(settings, fault_server):
        payloads = [article(n) for n in range(1, 11)]
        hooks.faults.script([fault for p in payloads for fault in analysis(p)] + [digest_answer(payloads)])
        for n, payload in enumerate(payloads, 1):
            response = await hooks.send("article.published", payload, msg_id=f"msg_burst_{n}")
            assert response.status_code == 202 and response.json()["status"] == "accepted"
        assert len(await hooks.jobs("refresh_story")) == 1  # coalesced while queued
        async with running_worker(hooks.app.state.runtime):
            refreshes = await hooks.settle("refresh_story")
            await hooks.settle("analyze_article", 10)
        # Only events queue a refresh, and all ten joined the one queued: it runs once, builds once.
        assert [r.status for r in refreshes] == ["succeeded"], [r.payload for r in refreshes]
        counts = await hooks.counts()
        assert counts["digests"] == 1
        current = await _current(hooks)
        assert current is not None and len(current.article_ids) == 10
        # 20 verified facts: 8 statements (the cap), the rest also reported; every fact is cited once.
        assert (len(current.digest.statements), len(current.digest.also_reported)) == (8, 12)
        everything = [*current.digest.statements, *current.digest.also_reported]
        assert sorted(c.fact_id for s in everything for c in s.citations) == sorted(
            f"A{n}.F{m}" for n in range(1, 11) for m in (1, 2))
        # Ten analyses of two calls each, and one digest call: the burst did not cost ten digests.
        assert len(hooks.faults.completions) == 21
        story = await hooks.client.get(f"/v1/stories/{STORY}/digest", headers={"authorization": "Bearer test-key"})
        assert story.status_code == 200 and story.json()["id"] == current.id


async def test_deleted_article_leaves_the_story_digest(hooks: Hooks) -> None:
    first, second = article(1), article(2)
    hooks.faults.script([*analysis(first), *analysis(second), digest_answer([first, second]), digest_answer([first])])
    await hooks.send("article.published", first, msg_id="msg_a")
    await hooks.send("article.published", second, msg_id="msg_b")
    await hooks.settle("refresh_story")
    before = await _current(hooks)
    assert before is not None and len(before.article_ids) == 2

    response = await hooks.send("article.deleted", {"id": "cms-2", "story_id": STORY}, msg_id="msg_del")
    assert response.status_code == 202 and len(response.json()["job_ids"]) == 1
    await hooks.settle("refresh_story", 2)
    after = await _current(hooks)
    assert after is not None and after.id != before.id
    assert len(after.article_ids) == 1 and after.article_ids[0] == before.article_ids[0]
    assert {s.outlet for s in after.digest.sources} == {"Outlet 1"}
    assert hooks.faults.remaining == 0


async def test_story_without_articles_has_no_current_digest(hooks: Hooks) -> None:
    only = article(1)
    hooks.faults.script([*analysis(only), digest_answer([only])])
    await hooks.send("article.published", only, msg_id="msg_only")
    await hooks.settle("refresh_story")
    assert await _current(hooks) is not None
    await hooks.send("article.deleted", {"id": "cms-1"}, msg_id="msg_gone")
    refreshes = await hooks.settle("refresh_story", 2)
    assert refreshes[-1].result is not None and refreshes[-1].result["digest_id"] is None
    assert await _current(hooks) is None
    again = await hooks.send("article.deleted", {"id": "cms-1"}, msg_id="msg_gone_again")
    assert again.json()["job_ids"] == []  # already deleted: nothing to refresh


async def test_refresh_steps_back_while_another_runs(any_db_idle_hooks: Hooks) -> None:
    hooks = any_db_idle_hooks
    runtime = hooks.app.state.runtime
    async with runtime.sessions() as session, session.begin():
        for worker in ("w1", "w2"):  # two workers each hold a refresh of the story
            await jobs.enqueue(session=session, kind="refresh_story", payload={"story_id": STORY},
                               dedupe_key=f"refresh:{STORY}")
            await jobs.claim_next(session=session, worker_id=worker, now=utcnow() + timedelta(seconds=1))
    ctx = JobContext(sessions=runtime.sessions, llm=runtime.llm, registry=runtime.registry,
                     settings=runtime.settings)
    result = await refresh_story(ctx, {"story_id": STORY})
    queued = [j for j in await hooks.jobs("refresh_story") if j.status == "queued"]
    assert [j.id for j in queued] == [result["deferred_to"]]
    assert queued[0].run_after > utcnow()  # after a short wait, not at once
    assert (await hooks.counts())["digests"] == 0


async def test_moving_an_article_refreshes_both_stories(idle_hooks: Hooks) -> None:
    await idle_hooks.send("article.published", article(1, story_id="old-story"), msg_id="msg_1")
    moved = await idle_hooks.send("article.updated", article(1, story_id="new-story"), msg_id="msg_2")
    assert moved.status_code == 202
    refreshes = await idle_hooks.jobs("refresh_story")
    assert sorted(j.payload["story_id"] for j in refreshes) == ["new-story", "old-story"]
    assert (await idle_hooks.counts())["articles"] == 1


async def test_old_deliveries_are_purged(idle_hooks: Hooks) -> None:
    sessions = idle_hooks.app.state.runtime.sessions
    async with sessions() as session, session.begin():
        await webhooks.record_delivery(session=session, webhook_id="msg_old", event_type="article.published",
                                       received_at=utcnow() - timedelta(days=8))
        await webhooks.record_delivery(session=session, webhook_id="msg_new", event_type="article.published")
    janitor = DeliveryJanitor(every_s=3600)
    assert janitor.due() and not janitor.due()
    assert await janitor.purge(sessions, retention_days=7) == 1
    assert (await idle_hooks.counts())["webhook_deliveries"] == 1


async def test_a_refresh_that_meets_a_running_analysis_waits_for_it_instead_of_asking_again(
    database_url: str, hook_settings: Callable[..., Settings], fault_server: FaultServer
) -> None:
    # No debounce and two jobs at once: the refresh starts while the article's own analysis is at the model.
    settings = hook_settings(database_url, story_refresh_delay_s=0, worker_concurrency=2)
    async for hooks in open_hooks(settings, fault_server):
        payload = article(1)
        facts, sentiment = analysis(payload)
        hooks.faults.script([delay(1.0, facts), delay(0.5, sentiment), digest_answer([payload])])
        response = await hooks.send("article.published", payload, msg_id="msg_overlap")
        assert response.status_code == 202 and len(response.json()["job_ids"]) == 2
        (analysed,) = await hooks.settle("analyze_article")
        (refresh,) = await hooks.settle("refresh_story")
        assert analysed.status == refresh.status == "succeeded"
        assert analysed.locked_at and refresh.locked_at and refresh.locked_at < analysed.finished_at  # they overlapped
        # Key facts, sentiment and the digest: the refresh read the analysis instead of paying for it again.
        assert len(hooks.faults.completions) == 3
        current = await _current(hooks)
        assert current is not None
        # The model's statement cites the first fact; the second, left out, is published by the service.
        assert [(s.written_by, [c.quote for c in s.citations]) for s in current.digest.statements] == [
            ("model", [facts_answer(payload)["facts"][0]["claim"]]),
            ("service", [facts_answer(payload)["facts"][1]["claim"]]),
        ]
