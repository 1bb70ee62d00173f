"""story: the one orchestration of the CLI and the jobs: prepare, analyse each text once, digest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from schemas import ArticleIn, ArticleRef, Digest, Extraction, Fact, Source
from service.errors import InputError, LLMHTTPError
from service.pipeline.story import StoryArticle, StoryOptions, digest_story, prepare_all
from service.pipeline.verify import quotes
from service.prompts import Prompt
from tests.pipeline.fakes import FakeModel, shown_sentences

BODY = "The council approved a budget of $4.2 million on Monday. The vote was 7 to 2."
HERALD = ArticleIn(id="herald-1", outlet="Herald", title="Budget", body=BODY)
REPRINT = ArticleIn(id="reprint-1", outlet="Reprint", title="Budget (reprint)", body=BODY)  # the same text
WIRE = ArticleIn(id="wire-1", outlet="Wire", title="Budget", body="Councillors passed the $4.2 million budget.")


def every_sentence(prompt: Prompt, messages: list[dict[str, str]]) -> dict[str, Any]:
    """Each sentence a fact; neutral sentiment; no usable digest statement (the service words them)."""
    if prompt.meta.name == "digest":
        return {"headline": "Budget passes", "statements": [{"text": "Budget passes.", "facts": ["A1.F1"]}]}
    shown = shown_sentences(messages)
    if prompt.meta.name == "sentiment":
        return {"overall": "neutral", "score": 0.0, "sentences": [1], "entities": []}
    return {"facts": [{"claim": text, "sentences": [n]} for n, text in shown.items()]}


def names(model: FakeModel) -> list[str]:
    """The prompts the model was asked, by name, in order."""
    return [ref.split("@")[0] for ref, _ in model.sent]


def test_prepare_all_turns_an_unpreparable_article_into_a_failed_source() -> None:
    huge = ArticleIn(id="huge-1", outlet="Spam", body="Words. " * 100)

    ready, failed = prepare_all([HERALD, huge], max_chars=500)

    assert [(a.article_id, a.prepared.outlet) for a in ready] == [("herald-1", "Herald")]
    assert [(s.article_id, s.status) for s in failed] == [("huge-1", "failed")]
    assert failed[0].error == "article body has 700 characters; the limit is 500"


async def test_identical_texts_are_analysed_once_and_listed_as_duplicates(prompts: dict[str, Prompt]) -> None:
    ready, failed = prepare_all([HERALD, REPRINT, WIRE], max_chars=10_000)
    model = FakeModel(every_sentence)

    digest = await digest_story(ready, prompts, model, StoryOptions(sequential=True), failed=failed)

    assert names(model) == ["key_facts", "sentiment", "key_facts", "sentiment", "digest"]
    assert [(s.article_id, s.status, s.error) for s in digest.sources] == [
        ("herald-1", "used", None),
        ("wire-1", "used", None),
        ("reprint-1", "duplicate", "same text as Herald"),
    ]
    cited = {c.article_id for s in [*digest.statements, *digest.also_reported] for c in s.citations}
    assert cited == {"herald-1", "wire-1"}


async def test_an_article_the_model_fails_on_is_a_failed_source(prompts: dict[str, Prompt]) -> None:
    def answer(prompt: Prompt, messages: list[dict[str, str]]) -> dict[str, Any]:
        if "Councillors" in messages[1]["content"] and prompt.meta.name != "digest":
            raise LLMHTTPError("the endpoint answered 503", status_code=503)
        return every_sentence(prompt, messages)

    ready, failed = prepare_all([HERALD, WIRE], max_chars=10_000)
    digest = await digest_story(ready, prompts, FakeModel(answer), StoryOptions(sequential=True), failed=failed)

    assert [(s.article_id, s.status, s.error) for s in digest.sources] == [
        ("herald-1", "used", None),
        ("wire-1", "failed", "the endpoint answered 503"),
    ]


async def test_when_every_article_fails_the_models_error_is_raised(prompts: dict[str, Prompt]) -> None:
    def down(prompt: Prompt, messages: list[dict[str, str]]) -> dict[str, Any]:
        raise LLMHTTPError("the endpoint answered 503", status_code=503)

    ready, _ = prepare_all([HERALD, WIRE], max_chars=10_000)
    with pytest.raises(LLMHTTPError):
        await digest_story(ready, prompts, FakeModel(down), StoryOptions(sequential=True))
    with pytest.raises(InputError, match="at least one article"):
        await digest_story([], prompts, FakeModel(down), StoryOptions())


class RecordingStore:
    """A store that answers the first analysis from its cache and records what it was lent."""

    def __init__(self, cached: Extraction) -> None:
        self.cached = cached
        self.analysed: list[str | None] = []
        self.digested: tuple[list[str], list[str]] | None = None

    async def analysis(self, article: StoryArticle, run: Callable[[], Awaitable[Extraction]]) -> Extraction:
        self.analysed.append(article.article_id)
        return self.cached if article.article_id == "herald-1" else await run()

    async def digest(self, extractions: list[Extraction], failed: list[Source],
                     run: Callable[[], Awaitable[Digest]]) -> Digest:
        self.digested = ([e.article.outlet for e in extractions], [s.status for s in failed])
        return await run()


async def test_a_store_answers_analyses_and_sees_the_digests_inputs(prompts: dict[str, Prompt]) -> None:
    ready, failed = prepare_all([HERALD, REPRINT, WIRE], max_chars=10_000)
    herald = ready[0].prepared
    cached = Extraction(article=ArticleRef.of(herald, "herald-1"),
                        facts=[Fact(id="F1", claim=herald.sentence(1).text, citations=quotes([1], herald))])
    store = RecordingStore(cached)
    model = FakeModel(every_sentence)
    steps: list[tuple[str, str | None]] = []

    digest = await digest_story(ready, prompts, model, StoryOptions(sequential=True, story_id="budget"),
                                failed=failed, store=store,
                                on_progress=lambda step, article: steps.append((step, article and article.outlet)))

    assert store.analysed == ["herald-1", "wire-1"]  # the reprint is never analysed
    assert store.digested == (["Herald", "Wire"], ["duplicate"])
    assert names(model) == ["key_facts", "sentiment", "digest"]  # the Herald's analysis came from the store
    assert steps == [("analysed", "Herald"), ("analysed", "Wire"), ("digesting", None)]
    assert digest.story_id == "budget"
    assert [(s.outlet, s.facts) for s in digest.sources if s.status == "used"] == [("Herald", 1), ("Wire", 1)]
