"""POST /v1/digests, GET /v1/digests/{id} and /v1/stories/{id}/digest: building, caching, rendering."""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import analysis, article, digest_answer
from tests.fake_openai import delay, malformed
from tests.running_app import API_KEY, Api

STORY = "council-budget"


async def analysed_story(api: Api, count: int = 2) -> list[dict[str, Any]]:
    """``count`` articles of STORY, each analysed (so a digest job asks the model only for the digest)."""
    payloads = [article(n, story_id=STORY) for n in range(1, count + 1)]
    for payload in payloads:
        api.faults.script(analysis(payload))
        response = await api.client.post("/v1/articles", params={"wait": 10}, json=payload)
        assert response.status_code == 200
    return payloads


async def built_digest(api: Api) -> dict[str, Any]:
    payloads = await analysed_story(api)
    api.faults.script([digest_answer(payloads)])
    response = await api.client.post("/v1/digests", params={"wait": 10}, json={"story_id": STORY})
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


async def test_a_story_digest_is_built_and_becomes_current(any_db_api: Api) -> None:
    payloads = await analysed_story(any_db_api)
    any_db_api.faults.script([digest_answer(payloads)])

    response = await any_db_api.client.post("/v1/digests", json={"story_id": STORY})

    assert response.status_code == 202
    accepted = response.json()
    job = await any_db_api.job(accepted["job_id"])
    assert job["status"] == "succeeded"
    assert job["result"]["digest_id"] == accepted["digest_id"]
    view = (await any_db_api.client.get(f"/v1/digests/{accepted['digest_id']}")).json()
    assert view["is_current"] is True
    assert view["story_id"] == STORY
    digest = view["digest"]
    # The model words each article's first fact; the second facts it left out are published as verified.
    assert [(s["written_by"], s["outlets"]) for s in digest["statements"]] == [
        ("model", 1), ("model", 1), ("service", 1), ("service", 1)]
    assert [c["fact_id"] for s in digest["statements"] for c in s["citations"]] == ["A1.F1", "A2.F1", "A1.F2", "A2.F2"]
    assert digest["statements"][0]["citations"][0]["quote"] == digest["statements"][0]["text"]
    assert {s["outlet"] for s in digest["sources"]} == {"Outlet 1", "Outlet 2"}
    current = (await any_db_api.client.get(f"/v1/stories/{STORY}/digest")).json()
    assert current["id"] == accepted["digest_id"]
    assert await any_db_api.count("digests") == 1


async def test_the_same_digest_twice_costs_no_model_call(any_db_api: Api) -> None:
    first = await built_digest(any_db_api)
    calls = len(any_db_api.faults.completions)

    again = await any_db_api.client.post("/v1/digests", params={"wait": 10}, json={"story_id": STORY})

    assert again.status_code == 200
    assert again.json()["id"] != first["id"]
    assert again.json()["digest"]["statements"] == first["digest"]["statements"]
    assert len(any_db_api.faults.completions) == calls
    job = (await any_db_api.client.get(f"/v1/stories/{STORY}/digest")).json()
    assert job["id"] == again.json()["id"]


async def test_a_digest_the_service_wrote_for_an_unusable_answer_is_published_but_never_reused(api: Api) -> None:
    payloads = await analysed_story(api)
    api.faults.script([malformed(), malformed()])

    first = await api.client.post("/v1/digests", params={"wait": 10}, json={"story_id": STORY})

    assert first.status_code == 200, first.text
    digest = first.json()["digest"]
    assert [s["written_by"] for s in digest["statements"]] == ["service"] * 4  # every verified fact, as written
    assert digest["provenance"]["error"].startswith("no usable digest after a re-ask")
    calls = len(api.faults.completions)
    # The next build asks the model again, as it would after a failed analysis: it may do better.
    api.faults.script([digest_answer(payloads)])

    again = await api.client.post("/v1/digests", params={"wait": 10}, json={"story_id": STORY})

    assert again.status_code == 200
    assert len(api.faults.completions) == calls + 1 and api.faults.remaining == 0
    assert [s["written_by"] for s in again.json()["digest"]["statements"]] == ["model", "model", "service", "service"]


async def test_an_article_with_the_same_text_as_another_is_a_duplicate_source(api: Api) -> None:
    original, reprint = article(1), article(1, cms_id="cms-reprint", outlet="Reprint Daily")
    api.faults.script(analysis(original))
    ids = []
    for payload in (original, reprint):  # the reprint's analysis is the original's, from the cache
        posted = await api.client.post("/v1/articles", params={"wait": 10}, json=payload)
        assert posted.status_code == 200
        ids.append(posted.json()["id"])
    api.faults.script([digest_answer([original])])

    response = await api.client.post("/v1/digests", params={"wait": 10}, json={"story_id": STORY})

    assert response.status_code == 200, response.text
    sources = response.json()["digest"]["sources"]
    assert [(s["article_id"], s["status"], s["error"]) for s in sources] == [
        (ids[0], "used", None),
        (ids[1], "duplicate", "same text as Outlet 1"),
    ]
    assert len(api.faults.completions) == 3 and api.faults.remaining == 0


async def test_articles_without_a_matching_analysis_are_analysed_by_the_digest_job(api: Api) -> None:
    payload = article(1, story_id=None)
    api.faults.script(analysis(payload))
    # Analysed with a pinned older prompt: the digest (active prompts) finds no analysis to reuse.
    pinned = await api.client.post("/v1/articles", params={"wait": 10, "prompt": "key_facts@1"}, json=payload)
    api.faults.script([*analysis(payload), digest_answer([payload])])

    response = await api.client.post("/v1/digests", params={"wait": 10}, json={"article_ids": ["cms-1"]})

    assert response.status_code == 200, response.text
    assert response.json()["story_id"] is None
    assert response.json()["is_current"] is False
    assert response.json()["article_ids"] == [pinned.json()["id"]]
    assert len(api.faults.completions) == 5
    assert await api.count("extractions") == 2
    assert await api.count("llm_calls") == 5


async def test_unknown_article_ids_are_named_and_nothing_is_written(api: Api) -> None:
    await analysed_story(api, count=1)
    before = await api.counts()

    response = await api.client.post("/v1/digests", json={"article_ids": ["cms-1", "ghost-1", "ghost-2"]})

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["article_ids"] == ["ghost-1", "ghost-2"]
    assert "ghost-1, ghost-2" in response.json()["detail"]
    assert await api.counts() == before


@pytest.mark.parametrize("body", [{}, {"article_ids": []}, {"story_id": ""}, {"article_ids": ["x" * 201]}])
async def test_a_request_naming_nothing_to_digest_is_422(api: Api, body: dict[str, Any]) -> None:
    response = await api.client.post("/v1/digests", json=body)

    assert response.status_code == 422
    assert response.json()["type"].endswith("/invalid-input")
    assert await api.count("jobs") == 0


async def test_a_story_without_articles_is_422(api: Api) -> None:
    response = await api.client.post("/v1/digests", json={"story_id": "empty-story"})

    assert response.status_code == 422
    assert "empty-story has no articles" in response.json()["detail"]
    assert await api.count("jobs") == 0


async def test_a_digest_not_built_yet_answers_202_with_its_job(api: Api) -> None:
    payloads = await analysed_story(api, count=1)
    api.faults.script([delay(1.0, digest_answer(payloads))])
    accepted = (await api.client.post("/v1/digests", json={"story_id": STORY})).json()

    pending = await api.client.get(f"/v1/digests/{accepted['digest_id']}")

    assert pending.status_code == 202
    assert pending.json()["job_id"] == accepted["job_id"]
    assert pending.headers["retry-after"] == "2"
    await api.job(accepted["job_id"])
    assert (await api.client.get(f"/v1/digests/{accepted['digest_id']}")).status_code == 200


async def test_unknown_digests_and_stories_are_404(api: Api) -> None:
    digest = await api.client.get("/v1/digests/nope")
    story = await api.client.get("/v1/stories/nope/digest")

    assert digest.status_code == story.status_code == 404
    assert "POST /v1/digests" in story.json()["detail"]


@pytest.mark.parametrize(("accept", "media"), [
    ("text/markdown", "text/markdown; charset=utf-8"),
    ("text/html,application/xhtml+xml,*/*;q=0.8", "text/html; charset=utf-8"),
    ("application/json", "application/json"),
    ("*/*", "application/json"),
    ("text/markdown;q=0.5, text/html;q=0.9", "text/html; charset=utf-8"),
])
async def test_the_digest_is_rendered_as_accepted(api: Api, accept: str, media: str) -> None:
    view = await built_digest(api)

    for path in (f"/v1/digests/{view['id']}", f"/v1/stories/{STORY}/digest"):
        response = await api.client.get(path, headers={"Accept": accept})
        assert response.status_code == 200
        assert response.headers["content-type"] == media
        assert response.headers["vary"] == "Accept"
        assert view["digest"]["statements"][0]["text"] in response.text


async def test_the_editor_page_opens_from_a_link_with_the_key_moved_into_a_cookie(api: Api) -> None:
    await built_digest(api)
    api.client.headers.pop("Authorization")

    login = await api.client.get(f"/v1/stories/{STORY}/digest", params={"format": "html", "api_key": API_KEY})

    assert login.status_code == 303
    assert login.headers["location"] == f"/v1/stories/{STORY}/digest?format=html"
    cookie = login.headers["set-cookie"]
    assert "newsdigest_key=test-key" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/v1/" in cookie
    page = await api.client.get(login.headers["location"])  # the client keeps the cookie, as a browser does
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.text.lstrip().lower().startswith("<!doctype html")


async def test_the_cookie_does_not_open_the_other_routes(api: Api) -> None:
    api.client.headers.pop("Authorization")
    api.client.cookies.set("newsdigest_key", API_KEY)

    assert (await api.client.get("/v1/prompts")).status_code == 401
    assert (await api.client.post("/v1/digests", json={"story_id": STORY})).status_code == 401


async def test_a_wrong_key_in_the_link_is_refused(api: Api) -> None:
    api.client.headers.pop("Authorization")

    response = await api.client.get(f"/v1/stories/{STORY}/digest", params={"format": "html", "api_key": "guess"})

    assert response.status_code == 401
    assert "set-cookie" not in response.headers
