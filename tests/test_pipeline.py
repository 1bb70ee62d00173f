"""One article and one story end to end, replayed from cassettes recorded on the embedded model."""

from __future__ import annotations

import json
from typing import Any

import pytest
import vcr

from schemas import Extraction
from service.llm.client import LLMClient
from service.pipeline.digest import build_digest
from service.pipeline.extract import extract_article
from service.pipeline.text import prepare
from service.pipeline.verify import repeats
from service.prompts import PromptRegistry
from service.settings import Settings
from service.quality import cassettes as json_body_serializer
from tests.conftest import ROOT, SECRET_HEADERS
from tests.factories import EXAMPLE_IDS, example

CASSETTES = ROOT / "cassettes" / "test_pipeline"


def assert_quotes_are_sentences(extraction: Extraction, text_by_number: dict[int, str]) -> None:
    for fact in extraction.facts:
        for citation in fact.citations:
            assert citation.quote == text_by_number[citation.sentence], fact
    if extraction.sentiment:
        for citation in extraction.sentiment.citations:
            assert citation.quote == text_by_number[citation.sentence]


@pytest.mark.vcr
@pytest.mark.parametrize("name", EXAMPLE_IDS)
async def test_analyze_example(name: str, recorded_settings: Settings, registry: PromptRegistry) -> None:
    article = prepare(example(name), max_chars=recorded_settings.max_article_chars)
    llm = LLMClient(recorded_settings)
    try:
        extraction = await extract_article(article, registry.resolve(), llm, sequential=True)
    finally:
        await llm.close()

    assert extraction.facts, extraction.provenance
    assert_quotes_are_sentences(extraction, {s.n: s.text for s in article.sentences})
    for fact in extraction.facts:
        assert all(
            article.text[s.start : s.end] == s.text
            for s in article.sentences
            if s.n in {c.sentence for c in fact.citations}
        )
    # A second wording of a kept fact (same sentences, same words, no new number) is not published.
    for i, fact in enumerate(extraction.facts):
        earlier = [(f.claim, [c.sentence for c in f.citations]) for f in extraction.facts[:i]]
        assert not repeats(fact.claim, [c.sentence for c in fact.citations], earlier), fact
    facts_prov = extraction.provenance["key_facts"]
    assert facts_prov.prompt == registry.get("key_facts").ref
    assert facts_prov.prompt_hash == registry.get("key_facts").sha256
    assert len(facts_prov.calls) == 1 + facts_prov.reasks
    assert all(call.input_tokens > 0 and call.output_tokens > 0 and call.attempts == 1 for call in facts_prov.calls)
    assert facts_prov.rejected == len(facts_prov.rejections)


@pytest.mark.vcr
@pytest.mark.default_cassette("test_analyze_example[observer].yaml")
async def test_article_prompts_share_the_cached_prefix(
    vcr: object, recorded_settings: Settings, registry: PromptRegistry
) -> None:
    """Both prompts start with the same system text and numbered article; only the task differs."""
    article = prepare(example("observer"), max_chars=recorded_settings.max_article_chars)
    llm = LLMClient(recorded_settings)
    try:
        await extract_article(article, registry.resolve(), llm, sequential=True)
    finally:
        await llm.close()
    first_requests = {}
    for request in vcr.requests:  # type: ignore[attr-defined]
        body = json.loads(request.body)
        first_requests.setdefault(body["max_tokens"], body["messages"])
    facts, sentiment = (first_requests[registry.get(n).meta.max_tokens] for n in ("key_facts", "sentiment"))
    assert facts[0] == sentiment[0]
    article_block = facts[1]["content"].split("TASK:")[0]
    assert sentiment[1]["content"].startswith(article_block)
    assert len(article_block) > 0.8 * len(article.text)


def replay(cassette: str) -> Any:
    """Replay-only use of another test's cassette, so the story digest reuses the recorded analyses."""
    recorder = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="none",
        match_on=["method", "path", "body"],
        filter_headers=SECRET_HEADERS,
    )
    recorder.register_serializer("yaml", json_body_serializer)
    return recorder.use_cassette(cassette, serializer="yaml")


@pytest.mark.vcr
async def test_digest_of_the_example_story(recorded_settings: Settings, registry: PromptRegistry) -> None:
    prompts = registry.resolve()
    llm = LLMClient(recorded_settings)
    sentences: dict[str, dict[int, str]] = {}
    extractions = []
    try:
        for name in EXAMPLE_IDS:
            article = prepare(example(name), max_chars=recorded_settings.max_article_chars)
            sentences[article.outlet] = {s.n: s.text for s in article.sentences}
            with replay(f"test_analyze_example[{name}].yaml"):
                extractions.append(await extract_article(article, prompts, llm, sequential=True))
        digest = await build_digest(extractions, prompts["digest"], llm, story_id="meta-scale-ai")
    finally:
        await llm.close()

    assert 1 <= len(digest.statements) <= 10
    for statement in digest.statements:
        assert statement.citations
        for citation in statement.citations:
            assert citation.quote == sentences[citation.outlet][citation.sentence]
        assert statement.outlets == len({c.outlet for c in statement.citations})
    for disagreement in digest.disagreements:
        outlets = {c.outlet for p in disagreement.positions for c in p.citations}
        assert len(outlets) >= 2
    assert {s.outlet for s in digest.sources} == set(sentences)
    assert digest.sentiment is not None
    assert digest.provenance is not None and digest.provenance.prompt == registry.get("digest").ref
    assert len(digest.provenance.calls) == 1 + digest.provenance.reasks
