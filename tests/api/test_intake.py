"""The intake stores and queues; only the analysis job prepares an article (tests for service.api.intake)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from schemas import PreparedArticle
from service.pipeline import text
from service.settings import Settings
from tests.factories import analysis, article, digest_answer
from tests.fake_openai import FaultServer
from tests.running_app import Api, open_api
from tests.signing import SECRET, event, signed


class Preparations:
    """Every call of ``service.pipeline.text.prepare``, wherever it is called from, and on which thread."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    @property
    def count(self) -> int:
        return len(self.threads)


@pytest.fixture
def preparations(monkeypatch: pytest.MonkeyPatch) -> Iterator[Preparations]:
    seen = Preparations()
    real = text.prepare

    def counted(*args: Any, **kwargs: Any) -> PreparedArticle:
        seen.threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    # Every importer of the function (the job module imports it by name), so no call goes uncounted.
    import service.jobs.tasks

    monkeypatch.setattr(text, "prepare", counted)
    monkeypatch.setattr(service.jobs.tasks, "prepare", counted)
    yield seen


@pytest.fixture
async def idle(sqlite_url: str, settings_for: Callable[..., Settings], fault_server: FaultServer) -> AsyncIterator[Api]:
    """No worker: what a request did is all there is to see."""
    async for running in open_api(settings_for(sqlite_url, run_worker=False, webhook_secret=SECRET), fault_server):
        yield running


@pytest.fixture
async def working(database_url: str, settings_for: Callable[..., Settings],
                  fault_server: FaultServer) -> AsyncIterator[Api]:
    settings = settings_for(database_url, webhook_secret=SECRET, story_refresh_delay_s=0.3,
                            story_refresh_busy_retry_s=0.2)
    async for running in open_api(settings, fault_server):
        yield running


async def _webhook(api: Api, kind: str, data: dict[str, Any], msg_id: str) -> Any:
    body = event(kind, data)
    return await api.client.post("/v1/webhooks/cms", content=body, headers=signed(body, msg_id=msg_id))


async def test_intake_answers_202_without_preparing(idle: Api, preparations: Preparations) -> None:
    html = {**article(2), "body": "<article><p>The council met on Monday.</p><p>It voted 7 to 2.</p></article>",
            "content_type": "html"}

    posted = await idle.client.post("/v1/articles", json=article(1))
    hooked = await _webhook(idle, "article.published", html, "msg_1")
    updated = await _webhook(idle, "article.updated", {**html, "body": html["body"] + "<p>More.</p>"}, "msg_2")

    assert (posted.status_code, hooked.status_code, updated.status_code) == (202, 202, 202)
    assert preparations.count == 0
    view = (await idle.client.get(f"/v1/articles/{posted.json()['article_id']}")).json()
    assert view["status"] == "queued"
    assert view["article"]["outlet"] == "Outlet 1"
    assert (view["article"]["content_hash"], view["article"]["sentence_count"]) == ("", 0)
    assert await idle.count("articles") == 2
    assert preparations.count == 0


async def test_the_analysis_job_prepares_the_article_off_the_event_loop(working: Api,
                                                                       preparations: Preparations) -> None:
    payload = article(3)
    working.faults.script(analysis(payload))

    response = await working.client.post("/v1/articles", params={"wait": 10}, json=payload)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "analysed"
    assert response.json()["article"]["sentence_count"] == 3
    assert preparations.count == 1
    assert preparations.threads[0] != threading.main_thread().name  # in a thread: the loop kept serving


async def test_the_same_text_spaced_otherwise_costs_no_model_call(working: Api) -> None:
    """Dedupe by the prepared text happens in the job: the intake cannot know two bodies prepare alike."""
    payload = article(4)
    working.faults.script(analysis(payload))
    first = await working.client.post("/v1/articles", params={"wait": 10}, json=payload)
    reformatted = {**payload, "id": "cms-4-copy", "body": "  " + payload["body"].replace(" ", " \u200b\t ") + "\n"}

    second = await working.client.post("/v1/articles", params={"wait": 10}, json=reformatted)

    assert second.status_code == 200, second.text
    assert second.json()["status"] == "analysed"
    assert second.json()["article"]["content_hash"] == first.json()["article"]["content_hash"]
    assert second.json()["facts"] == first.json()["facts"]
    assert len(working.faults.completions) == 2  # the first article's two prompts only
    assert await working.count("extractions") == 1


async def test_an_unchanged_update_keeps_the_prepared_article(working: Api, preparations: Preparations) -> None:
    payload = article(5)
    working.faults.script(analysis(payload))
    await working.client.post("/v1/articles", params={"wait": 10}, json=payload)

    again = await working.client.post("/v1/articles", json=payload)
    view = (await working.client.get("/v1/articles/cms-5")).json()

    assert view["status"] == "analysed"  # at once: the stored text was kept, nothing to prepare
    job = await working.job(again.json()["job_id"])
    assert job["status"] == "succeeded" and job["result"]["cache_hit"] is True
    assert preparations.count == 1
    assert len(working.faults.completions) == 2


async def test_an_unusable_article_is_a_failed_source_of_its_story_digest(working: Api) -> None:
    usable = article(6)
    unusable = {**article(7), "content_type": "html", "body": "<div><script>var a = 'The council met.';</script></div>"}
    working.faults.script([*analysis(usable), digest_answer([usable])])

    for n, data in enumerate((usable, unusable)):
        response = await _webhook(working, "article.published", data, f"msg_{n}")
        assert response.status_code == 202, response.text

    view = await _settled_view(working, "cms-7")
    assert view["status"] == "failed"
    assert view["error"] == "article has no readable sentence after removing markup and whitespace"
    assert view["job"]["status"] == "failed" and view["job"]["error"] == view["error"]
    digest = await _story_digest(working, "council-budget")
    sources = {s["article_id"]: s for s in digest["digest"]["sources"]}
    assert sources[view["id"]]["status"] == "failed"
    assert sources[view["id"]]["error"] == view["error"]


async def _settled_view(api: Api, article_id: str, timeout: float = 20.0) -> dict[str, Any]:
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        view: dict[str, Any] = (await api.client.get(f"/v1/articles/{article_id}")).json()
        if view["status"] in ("analysed", "failed"):
            return view
        assert asyncio.get_running_loop().time() < deadline, view
        await asyncio.sleep(0.05)


async def _story_digest(api: Api, story_id: str, timeout: float = 20.0) -> dict[str, Any]:
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await api.client.get(f"/v1/stories/{story_id}/digest")
        if response.status_code == 200:
            found: dict[str, Any] = response.json()
            return found
        assert asyncio.get_running_loop().time() < deadline, response.text
        await asyncio.sleep(0.05)
