"""The example story end to end, replayed from the embedded model's recording of it (the gold story's).

One recording serves the article-level tests, the prefix-cache check and the proof that the CLI and
the API, which run the same story orchestration, publish the same digest for the same articles.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from typer.testing import CliRunner

from schemas import Extraction
from service.api import create_app
from service.cli import app as cli
from service.llm.factory import open_llm
from service.pipeline.extract import extract_article
from service.pipeline.text import prepare
from service.pipeline.verify import repeats
from service.prompts import PromptRegistry
from service.quality.report import recording
from service.settings import Settings
from tests.conftest import RECORDING_BASE_URL, ROOT
from tests.factories import EXAMPLE_IDS, EXAMPLES, example

STORY = "meta-scale-ai"
CASSETTES = ROOT / "cassettes"
#: What the recording holds per article: (facts kept, of them repaired, re-asks, rejected).
RECORDED = {"aiblog": (7, 2, 0, 0), "observer": (4, 1, 0, 0), "techblog": (7, 6, 0, 0)}


def assert_quotes_are_sentences(extraction: Extraction, text_by_number: dict[int, str]) -> None:
    for fact in extraction.facts:
        for citation in fact.citations:
            assert citation.quote == text_by_number[citation.sentence], fact
    if extraction.sentiment:
        for citation in extraction.sentiment.citations:
            assert citation.quote == text_by_number[citation.sentence]


async def analyse(name: str, settings: Settings, registry: PromptRegistry) -> tuple[Extraction, Any, list[Any]]:
    """The article's analysis from the recording, the cassette, and each request's messages in order."""
    article = prepare(example(name), max_chars=settings.max_article_chars)
    sent: list[Any] = []
    with recording(CASSETTES, STORY) as cassette:
        async with open_llm(settings) as llm:
            complete = llm.complete

            async def noting(prompt: Any, messages: list[dict[str, str]]) -> Any:
                sent.append((prompt.meta.name, messages))
                return await complete(prompt, messages)

            llm.complete = noting  # type: ignore[method-assign]
            extraction = await extract_article(article, registry.resolve(), llm, sequential=True,
                                               section_chars=settings.article_section_chars)
    return extraction, cassette, sent


@pytest.mark.parametrize("name", EXAMPLE_IDS)
async def test_analyze_example(name: str, recorded_settings: Settings, registry: PromptRegistry) -> None:
    article = prepare(example(name), max_chars=recorded_settings.max_article_chars)
    extraction, cassette, _ = await analyse(name, recorded_settings, registry)

    facts_prov = extraction.provenance["key_facts"]
    assert (len(extraction.facts), facts_prov.repaired, facts_prov.reasks, facts_prov.rejected) == RECORDED[name]
    assert cassette.play_count == sum(len(p.calls) for p in extraction.provenance.values())
    assert_quotes_are_sentences(extraction, {s.n: s.text for s in article.sentences})
    for fact in extraction.facts:
        assert all(article.text[s.start : s.end] == s.text for s in article.sentences
                   if s.n in {c.sentence for c in fact.citations})
        # A repaired fact keeps the model's words; only its citation moved, away from what it had cited.
        if fact.repaired_from is not None:
            assert fact.repaired_from != [c.sentence for c in fact.citations]
    for i, fact in enumerate(extraction.facts):
        earlier = [(f.claim, [c.sentence for c in f.citations]) for f in extraction.facts[:i]]
        assert not repeats(fact.claim, [c.sentence for c in fact.citations], earlier), fact
    assert facts_prov.prompt == registry.get("key_facts").ref
    assert facts_prov.prompt_hash == registry.get("key_facts").sha256
    assert len(facts_prov.calls) == 1 + facts_prov.reasks
    assert all(call.input_tokens > 0 and call.output_tokens > 0 and call.attempts == 1 for call in facts_prov.calls)


async def test_article_prompts_share_the_cached_prefix(recorded_settings: Settings, registry: PromptRegistry) -> None:
    """Both prompts start with the same system text and numbered article; only the task differs."""
    article = prepare(example("observer"), max_chars=recorded_settings.max_article_chars)
    _, _, sent = await analyse("observer", recorded_settings, registry)
    first_requests: dict[str, Any] = {}
    for name, messages in sent:
        first_requests.setdefault(name, messages)
    facts, sentiment = first_requests["key_facts"], first_requests["sentiment"]
    assert facts[0] == sentiment[0]
    article_block = facts[1]["content"].split("TASK:")[0]
    assert sentiment[1]["content"].startswith(article_block)
    assert len(article_block) > 0.8 * len(article.text)


def _published(digest: dict[str, Any]) -> dict[str, Any]:
    """What an editor reads, without the times and ids that differ between two runs."""
    def statement(s: dict[str, Any]) -> tuple[Any, ...]:
        return s["text"], s["written_by"], s["outlets"], [(c["outlet"], c["sentence"], c["quote"])
                                                         for c in s["citations"]]
    return {
        "headline": digest["headline"],
        "statements": [statement(s) for s in digest["statements"]],
        "also_reported": [statement(s) for s in digest["also_reported"]],
        "disagreements": [(d["topic"], [(p["says"], p["outlets"], [(c["outlet"], c["sentence"])
                                                                   for c in p["citations"]])
                                        for p in d["positions"]]) for d in digest["disagreements"]],
        "sources": sorted((s["outlet"], s["status"], s["facts"]) for s in digest["sources"]),
    }


async def _api_digest(settings: Settings) -> dict[str, Any]:
    app = create_app(settings.model_copy(update={"api_keys": [settings.llm_api_key], "migrate_on_start": True,
                                                 "worker_poll_interval_s": 0.05}))
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else ""
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager, httpx.AsyncClient(
        transport=httpx.ASGITransport(app=manager.app), base_url="http://test",
        headers={"Authorization": f"Bearer {key}"},
    ) as client:
        for path in EXAMPLES:
            accepted = await client.post("/v1/articles?wait=60", content=path.read_bytes(),
                                         headers={"Content-Type": "application/json"})
            assert accepted.status_code in (200, 202), accepted.text
        asked = await client.post("/v1/digests", json={"story_id": STORY})
        assert asked.status_code in (200, 202), asked.text
        for _ in range(600):
            job = (await client.get(f"/v1/jobs/{asked.json()['job_id']}")).json()
            if job["status"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(0.05)
        assert job["status"] == "succeeded", job
        answer = await client.get(f"/v1/digests/{asked.json()['digest_id']}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body.get("digest", body)


async def test_the_cli_and_the_api_publish_the_same_digest(
    recorded_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NEWSDIGEST_LLM_BASE_URL", RECORDING_BASE_URL)
    monkeypatch.setenv("NEWSDIGEST_LLM_MODE", "json_object")
    monkeypatch.setenv("NEWSDIGEST_LLM_MODEL", "qwen2.5-coder-1.5b-instruct-q4")
    monkeypatch.setenv("NEWSDIGEST_LLM_CONTEXT_TOKENS", "8192")
    monkeypatch.setenv("NEWSDIGEST_LLM_MAX_CONCURRENCY", "1")
    with recording(CASSETTES, STORY, repeats=True, ignore_hosts=("test",)):
        result = await asyncio.to_thread(
            CliRunner().invoke, cli, ["digest", "--format", "json", *map(str, EXAMPLES), "--story", STORY])
        assert result.exit_code == 0, result.output
        through_cli = json.loads(result.stdout)
        through_api = await _api_digest(recorded_settings)

    assert _published(through_api) == _published(through_cli)
    assert len(through_cli["statements"]) >= 6
    assert {d["kind"] for d in through_cli["disagreements"]} >= {"title", "employer"}
