"""Idempotency-Key on the POSTs: replay, a different body (422), still in progress (409), per API key."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from service.settings import Settings
from tests.factories import analysis, article, digest_answer
from tests.fake_openai import FaultServer, delay
from tests.running_app import Api, open_api

KEY = {"Idempotency-Key": "cms-retry-7f3a"}


async def test_a_retry_with_the_same_key_replays_the_first_answer(any_db_api: Api) -> None:
    payload = article(1)
    any_db_api.faults.script(analysis(payload))
    first = await any_db_api.client.post("/v1/articles", json=payload, headers=KEY)
    await any_db_api.job(first.json()["job_id"])

    retry = await any_db_api.client.post("/v1/articles", json=payload, headers=KEY)

    assert retry.status_code == first.status_code == 202
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await any_db_api.count("jobs") == 1
    assert len(any_db_api.faults.completions) == 2


async def test_the_same_key_with_another_body_is_422(api: Api) -> None:
    payload = article(1)
    api.faults.script(analysis(payload))
    first = await api.client.post("/v1/articles", json=payload, headers=KEY)
    await api.job(first.json()["job_id"])

    response = await api.client.post("/v1/articles", json=article(2), headers=KEY)

    assert response.status_code == 422
    assert response.json()["type"].endswith("/idempotency-key-reused")
    assert await api.count("articles") == 1


async def test_the_same_key_while_the_first_request_waits_is_409(api: Api) -> None:
    payload = article(1)
    first_answer, second_answer = analysis(payload)
    api.faults.script([delay(1.0, first_answer), second_answer])

    async def retry_soon() -> tuple[int, str]:
        await asyncio.sleep(0.3)
        response = await api.client.post("/v1/articles", json=payload, headers=KEY)
        return response.status_code, response.json()["type"]

    first, retried = await asyncio.gather(
        api.client.post("/v1/articles", params={"wait": 10}, json=payload, headers=KEY), retry_soon())

    assert first.status_code == 200
    assert retried == (409, "https://newsdigest.dev/problems/idempotency-key-in-use")
    assert await api.count("jobs") == 1


async def test_a_failed_request_releases_its_key(api: Api) -> None:
    bad = await api.client.post("/v1/digests", json={"article_ids": ["ghost"]}, headers=KEY)
    payload = article(1)
    api.faults.script([*analysis(payload), digest_answer([payload])])
    await api.client.post("/v1/articles", params={"wait": 10}, json=payload)

    fixed = await api.client.post("/v1/digests", params={"wait": 10}, json={"article_ids": ["ghost"]}, headers=KEY)
    good = await api.client.post("/v1/digests", params={"wait": 10}, json={"article_ids": ["cms-1"]}, headers=KEY)

    assert bad.status_code == fixed.status_code == 422
    assert good.status_code == 200
    assert await api.count("idempotency_keys") == 1


async def test_keys_are_scoped_to_the_api_key(sqlite_url: str, settings_for: Callable[..., Settings],
                                              fault_server: FaultServer) -> None:
    payload = article(1)
    fault_server.script(analysis(payload))
    settings = settings_for(sqlite_url, api_keys=["test-key", "other-cms"])
    async for api in open_api(settings, fault_server):
        first = await api.client.post("/v1/articles", json=payload, headers=KEY)
        await api.job(first.json()["job_id"])
        other = await api.client.post("/v1/articles", json=payload,
                                      headers={**KEY, "Authorization": "Bearer other-cms"})

        assert other.status_code == 202
        assert "idempotent-replayed" not in other.headers
        assert other.json()["job_id"] != first.json()["job_id"]
        assert await api.count("idempotency_keys") == 2
        await api.job(other.json()["job_id"])  # a cache hit: no model call
