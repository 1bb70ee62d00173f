"""GET /v1/jobs/{id}, and how the worker records retries and failures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from service.settings import Settings
from tests.factories import analysis, article
from tests.fake_openai import FaultServer, delay, status
from tests.running_app import Api, open_api


async def test_a_job_whose_model_always_answers_500_fails_with_attempts_and_error(api: Api) -> None:
    # Per job attempt the client tries each prompt twice (llm_max_attempts=2); the job gets 2 attempts.
    api.faults.script([status(500)] * 8)

    accepted = (await api.client.post("/v1/articles", json=article(1))).json()
    job = await api.job(accepted["job_id"])

    assert job["status"] == "failed"
    assert job["attempts"] == job["max_attempts"] == 2
    assert "LLMHTTPError" in job["error"]
    assert "500" in job["error"]
    assert job["finished_at"] is not None
    assert job["result"] is None
    view = (await api.client.get(f"/v1/articles/{accepted['article_id']}")).json()
    assert view["status"] == "failed"
    assert view["job"]["error"] == job["error"]
    assert await api.count("extractions") == 0
    for _ in range(100):  # the sentiment call of each attempt may still be running: let it end here
        if api.faults.remaining == 0:
            break
        await asyncio.sleep(0.05)


async def test_a_job_that_fails_once_succeeds_on_its_second_attempt(api: Api) -> None:
    payload = article(2)
    # One call at a time on a loopback endpoint, so the prompts go back to back: two 500s spend key_facts'
    # two tries and fail the first attempt; the job runs again.
    api.faults.script([status(500)] * 2 + analysis(payload))

    accepted = (await api.client.post("/v1/articles", json=article(2))).json()
    job = await api.job(accepted["job_id"])

    assert job["status"] == "succeeded"
    assert job["attempts"] == 2
    assert job["error"] is None
    assert await api.count("extractions") == 1


async def test_an_unknown_job_is_404(api: Api) -> None:
    response = await api.client.get("/v1/jobs/nope")

    assert response.status_code == 404
    assert response.json()["detail"] == "no job nope"


async def test_a_job_running_at_shutdown_is_handed_back_and_finished_after_a_restart(
        sqlite_url: str, settings_for: Callable[..., Settings], fault_server: FaultServer) -> None:
    payload = article(3)
    fault_server.script([delay(30, analysis(payload)[0])])  # still answering when the app stops
    settings = settings_for(sqlite_url, worker_shutdown_grace_s=0.2)
    async for api in open_api(settings, fault_server):
        accepted = (await api.client.post("/v1/articles", json=payload)).json()
        for _ in range(200):
            if fault_server.completions:
                break
            await asyncio.sleep(0.05)

    async for api in open_api(settings, fault_server):
        released = (await api.client.get(f"/v1/jobs/{accepted['job_id']}")).json()
        fault_server.script(analysis(payload))
        job = await api.job(accepted["job_id"])

    assert released["status"] in ("queued", "running")
    assert released["error"] is None  # handed back, not failed: the job did nothing wrong
    assert job["status"] == "succeeded"
    assert job["attempts"] == 2
