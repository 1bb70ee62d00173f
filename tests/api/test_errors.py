"""Bad requests: a clear 4xx problem+json that names the problem, echoes nothing, and writes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.factories import article
from tests.running_app import Api

PROBLEM = "application/problem+json"
SECRET_TEXT = "Confidential draft: the minister resigns tomorrow"


async def assert_nothing_written(api: Api) -> None:
    assert await api.counts() == {table: 0 for table in await api.counts()}


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, object] = response.json()
    assert body["type"] == f"https://newsdigest.dev/problems/{kind}"
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    assert SECRET_TEXT not in response.text
    return body


async def test_malformed_json_is_400(api: Api) -> None:
    response = await api.client.post("/v1/articles", content=b'{"outlet": "A", "body": "' + SECRET_TEXT.encode(),
                                      headers={"Content-Type": "application/json"})

    body = assert_problem(response, 400, "malformed-json")
    assert "not valid JSON" in str(body["detail"])
    await assert_nothing_written(api)


async def test_missing_and_invalid_fields_are_listed_without_their_values(api: Api) -> None:
    response = await api.client.post("/v1/articles", json={"title": SECRET_TEXT, "content_type": SECRET_TEXT})

    body = assert_problem(response, 422, "invalid-input")
    fields = {tuple(e["loc"]) for e in body["errors"]}  # type: ignore[union-attr]
    assert {("body", "outlet"), ("body", "body"), ("body", "content_type")} <= fields
    assert "body.outlet: Field required" in str(body["detail"])
    assert all(set(e) == {"loc", "msg", "type"} for e in body["errors"])  # type: ignore[union-attr]
    await assert_nothing_written(api)


async def test_an_unknown_field_is_refused(api: Api) -> None:
    response = await api.client.post("/v1/articles", json={**article(1), "author": "X"})

    body = assert_problem(response, 422, "invalid-input")
    assert "body.author" in str(body["detail"])
    await assert_nothing_written(api)


async def test_a_body_over_the_size_limit_is_413_by_content_length(api: Api) -> None:
    payload = {**article(1), "body": SECRET_TEXT + " x" * 600_000}

    response = await api.client.post("/v1/articles", json=payload)

    body = assert_problem(response, 413, "request-too-large")
    assert "1000000 bytes" in str(body["detail"])
    await assert_nothing_written(api)


async def test_a_streamed_body_over_the_size_limit_is_413(api: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the guard must count
        yield json.dumps({**article(1), "body": "x" * 200}).encode()[:-1]
        for _ in range(20):
            yield b" " * 100_000
        yield b"}"

    response = await api.client.post("/v1/articles", content=chunks(), headers={"Content-Type": "application/json"})

    assert_problem(response, 413, "request-too-large")
    await assert_nothing_written(api)


async def test_a_body_that_is_not_json_is_415(api: Api) -> None:
    response = await api.client.post("/v1/articles", content=f"outlet=A&body={SECRET_TEXT}",
                                      headers={"Content-Type": "application/x-www-form-urlencoded"})

    body = assert_problem(response, 415, "unsupported-media-type")
    assert "application/json" in str(body["detail"])
    await assert_nothing_written(api)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic dGVzdA=="}])
async def test_a_missing_or_wrong_api_key_is_401(api: Api, headers: dict[str, str]) -> None:
    api.client.headers.pop("Authorization")

    response = await api.client.post("/v1/articles", json=article(1), headers=headers)

    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == 'Bearer realm="newsdigest"'
    assert "wrong-key" not in response.text
    await assert_nothing_written(api)


@pytest.mark.parametrize("path", ["/v1/jobs/x", "/v1/prompts", "/v1/digests/x", "/v1/stories/s/digest",
                                  "/v1/articles/x"])
async def test_every_v1_read_needs_the_key(api: Api, path: str) -> None:
    api.client.headers.pop("Authorization")

    assert_problem(await api.client.get(path), 401, "unauthorized")


async def test_an_unknown_route_is_a_404_problem(api: Api) -> None:
    body = assert_problem(await api.client.get("/v1/nothing-here"), 404, "not-found")

    assert body["detail"] == "no route for GET /v1/nothing-here"


async def test_a_wrong_method_is_a_405_problem(api: Api) -> None:
    response = await api.client.delete("/v1/prompts")

    assert_problem(response, 405, "method-not-allowed")
    assert "GET" in response.headers["allow"]


async def test_wait_out_of_range_is_refused(api: Api) -> None:
    response = await api.client.post("/v1/articles", params={"wait": 61}, json=article(1))

    body = assert_problem(response, 422, "invalid-input")
    assert "query.wait" in str(body["detail"])
    await assert_nothing_written(api)


async def test_a_request_id_is_echoed_and_a_bad_one_replaced(api: Api) -> None:
    kept = await api.client.get("/healthz", headers={"X-Request-ID": "cms-42.retry-1"})
    replaced = await api.client.get("/healthz", headers={"X-Request-ID": "<script>"})

    assert kept.headers["x-request-id"] == "cms-42.retry-1"
    assert replaced.headers["x-request-id"] != "<script>"
    assert len(replaced.headers["x-request-id"]) == 32
