"""POST /v1/articles and GET /v1/articles/{id}: storing, analysing, caching, re-analysing."""

from __future__ import annotations

from service.prompts import PromptRegistry
from tests.factories import analysis, article, facts_answer
from tests.fake_openai import ok
from tests.running_app import Api


async def test_submit_queues_the_analysis_and_the_article_shows_its_facts(any_db_api: Api,
                                                                          registry: PromptRegistry) -> None:
    payload = article(1)
    any_db_api.faults.script(analysis(payload))

    response = await any_db_api.client.post("/v1/articles", json=payload)

    assert response.status_code == 202
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert response.headers["location"] == accepted["job_url"] == f"/v1/jobs/{accepted['job_id']}"
    job = await any_db_api.job(accepted["job_id"])
    assert job["status"] == "succeeded"
    assert job["attempts"] == 1
    assert job["result"]["article_id"] == accepted["article_id"]
    assert job["result"]["cache_hit"] is False

    view = (await any_db_api.client.get(f"/v1/articles/{accepted['article_id']}")).json()
    assert view["status"] == "analysed"
    assert view["cms_id"] == "cms-1"
    assert [f["claim"] for f in view["facts"]] == [f["claim"] for f in facts_answer(payload)["facts"]]
    assert view["facts"][0]["citations"] == [{"sentence": 1, "quote": facts_answer(payload)["facts"][0]["claim"]}]
    assert view["sentiment"]["overall"] == "neutral"
    assert view["provenance"]["key_facts"]["prompt"] == registry.get("key_facts").ref
    assert await any_db_api.count("extractions") == 1
    assert await any_db_api.count("llm_calls") == 2


async def test_wait_answers_200_with_the_analysed_article(any_db_api: Api) -> None:
    payload = article(2)
    any_db_api.faults.script(analysis(payload))

    response = await any_db_api.client.post("/v1/articles", params={"wait": 10}, json=payload)

    assert response.status_code == 200
    assert response.json()["status"] == "analysed"
    assert len(response.json()["facts"]) == 2


async def test_the_same_article_twice_costs_no_second_model_call(any_db_api: Api) -> None:
    payload = article(3)
    any_db_api.faults.script(analysis(payload))
    first = await any_db_api.client.post("/v1/articles", params={"wait": 10}, json=payload)
    calls = len(any_db_api.faults.completions)

    second = await any_db_api.client.post("/v1/articles", params={"wait": 10}, json=payload)

    assert first.status_code == second.status_code == 200
    assert second.json()["id"] == first.json()["id"]  # upserted by the CMS id
    assert second.json()["facts"] == first.json()["facts"]
    assert len(any_db_api.faults.completions) == calls == 2
    assert await any_db_api.count("extractions") == 1
    assert await any_db_api.count("articles") == 1


async def test_the_same_text_under_another_cms_id_reuses_the_analysis(api: Api) -> None:
    payload = article(4)
    api.faults.script(analysis(payload))
    await api.client.post("/v1/articles", params={"wait": 10}, json=payload)

    twin = await api.client.post("/v1/articles", params={"wait": 10}, json={**payload, "id": "wire-copy"})

    assert twin.status_code == 200
    assert twin.json()["article"]["article_id"] == twin.json()["id"]  # cited as itself, not as the first
    assert twin.json()["facts"][0]["claim"] == facts_answer(payload)["facts"][0]["claim"]
    assert len(api.faults.completions) == 2


async def test_an_updated_body_is_analysed_again(any_db_api: Api) -> None:
    payload = article(5)
    updated = article(5, extra=" The vote was 7 to 2.")
    any_db_api.faults.script(analysis(payload) + analysis(updated))
    first = await any_db_api.client.post("/v1/articles", params={"wait": 10}, json=payload)

    second = await any_db_api.client.post("/v1/articles", params={"wait": 10}, json=updated)

    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["article"]["sentence_count"] == 4
    assert second.json()["article"]["content_hash"] != first.json()["article"]["content_hash"]
    assert len(any_db_api.faults.completions) == 4
    assert await any_db_api.count("extractions") == 2


async def test_a_pinned_prompt_version_is_used_and_recorded(api: Api, registry: PromptRegistry) -> None:
    payload = article(6)
    api.faults.script(analysis(payload))

    response = await api.client.post("/v1/articles", params={"wait": 10, "prompt": "key_facts@1"}, json=payload)

    assert response.json()["provenance"]["key_facts"]["prompt"] == "key_facts@1"
    assert response.json()["provenance"]["sentiment"]["prompt"] == registry.get("sentiment").ref


async def test_an_unknown_prompt_pin_is_refused_and_nothing_is_written(api: Api) -> None:
    response = await api.client.post("/v1/articles", params={"prompt": "key_facts@99"}, json=article(7))

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/unknown-prompt-version")
    assert "key_facts@99" in response.json()["detail"]
    assert set((await api.counts()).values()) == {0}


async def test_a_body_without_a_letter_or_digit_is_refused_and_nothing_is_written(api: Api) -> None:
    response = await api.client.post("/v1/articles", json={**article(8), "body": " \u200b... \n\t-- "})

    assert response.status_code == 422
    assert response.json()["type"].endswith("/empty-article")
    assert set((await api.counts()).values()) == {0}


async def test_markup_without_readable_text_is_a_failed_job_with_its_reason(any_db_api: Api) -> None:
    """Only the analysis job prepares the text (the intake cannot afford to): its outcome is the answer."""
    payload = {**article(8), "body": "<p> </p>", "content_type": "html"}

    response = await any_db_api.client.post("/v1/articles", json=payload)

    assert response.status_code == 202
    job = await any_db_api.job(response.json()["job_id"])
    assert job["status"] == "failed" and job["attempts"] == 1  # no retry can give it a sentence
    assert job["error"] == "article has no readable sentence after removing markup and whitespace"
    view = (await any_db_api.client.get("/v1/articles/cms-8")).json()
    assert view["status"] == "failed"
    assert view["error"] == job["error"]
    assert view["job"]["id"] == job["id"]
    assert view["article"]["content_hash"] == "" and view["article"]["sentence_count"] == 0
    assert any_db_api.faults.completions == []


async def test_an_article_over_the_character_limit_is_413(api: Api) -> None:
    body = "The council met. " * 4000  # 68,000 characters: over max_article_chars, under max_request_bytes
    response = await api.client.post("/v1/articles", json={**article(9), "body": body})

    assert response.status_code == 413
    assert response.json()["type"].endswith("/article-too-large")
    assert body[:40] not in response.text
    assert set((await api.counts()).values()) == {0}


async def test_reading_an_article_by_the_cms_id_while_its_job_is_queued(api: Api) -> None:
    payload = article(10)
    api.faults.script([ok(facts_answer(payload)), ok({"overall": "neutral", "score": 0, "sentences": [1]})])
    accepted = (await api.client.post("/v1/articles", json=payload)).json()

    view = (await api.client.get("/v1/articles/cms-10")).json()

    assert view["id"] == accepted["article_id"]
    assert view["status"] in ("queued", "running", "analysed")
    if view["status"] != "analysed":
        assert view["job"]["id"] == accepted["job_id"]
        assert view["facts"] == []
    await api.job(accepted["job_id"])


async def test_an_unknown_article_is_404(api: Api) -> None:
    response = await api.client.get("/v1/articles/nope")

    assert response.status_code == 404
    assert response.json() == {
        "type": "https://newsdigest.dev/problems/not-found", "title": "Not found", "status": 404,
        "detail": "no article nope", "instance": "/v1/articles/nope", "request_id": response.headers["x-request-id"],
    }
