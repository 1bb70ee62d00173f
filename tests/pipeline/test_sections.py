"""extract.sections: a long article is asked about in overlapping runs of sentences, cited by global numbers."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

from schemas import PreparedArticle, Sentence
from service.pipeline.extract import SECTION_OVERLAP, extract_article, sections
from service.prompts import Prompt
from tests.factories import prepared
from tests.pipeline.fakes import FakeModel, shown_sentences

WORDS = ["roof", "bridge and tunnel", "school heating", "library", "street lighting and signals", "harbour wall"]
# 30 sentences of 60 to 100 characters, each with its own amount, so every fact is told once.
LONG = prepared(" ".join(
    f"In district {n} the council spent {n * 13} thousand euros on {WORDS[n % len(WORDS)]} repairs."
    for n in range(1, 31)
))


def cost(run: tuple[Sentence, ...]) -> int:
    """Characters of a run as the prompt numbers it (the measure ``sections`` keeps under max_chars)."""
    return sum(len(s.text) + 6 for s in run)


def numbers(run: tuple[Sentence, ...]) -> list[int]:
    return [s.n for s in run]


def test_without_a_limit_or_within_it_the_article_is_one_section() -> None:
    assert sections(LONG, None) == [LONG.sentences]
    assert sections(LONG, cost(LONG.sentences)) == [LONG.sentences]
    assert len(sections(LONG, cost(LONG.sentences) - 1)) == 2


@pytest.mark.parametrize("max_chars", [400, 700, 1_000])
def test_sections_cover_every_sentence_overlap_by_section_overlap_and_fit(max_chars: int) -> None:
    runs = sections(LONG, max_chars)

    assert len(runs) > 2
    assert [s.n for s in runs[0]][:1] == [1] and runs[-1][-1].n == len(LONG.sentences)
    assert sorted({s.n for run in runs for s in run}) == [s.n for s in LONG.sentences]
    for run in runs:
        assert numbers(run) == list(range(run[0].n, run[-1].n + 1))  # consecutive sentences
        assert cost(run) <= max_chars
        assert len(run) > SECTION_OVERLAP
    for before, after in pairwise(runs):
        assert numbers(before)[-SECTION_OVERLAP:] == numbers(after)[:SECTION_OVERLAP]
        # ... and no more: each run goes as far as max_chars allows.
        assert after[0].n == before[-1].n - SECTION_OVERLAP + 1


def test_a_sentence_longer_than_max_chars_is_a_section_of_its_own_and_nothing_is_asked_twice() -> None:
    texts = [f"Item {n} cost {n} euros." for n in range(1, 11)]
    texts[5] = "Item six " + "was very long and winding " * 8 + "indeed."
    article = prepared(" ".join(texts))

    runs = sections(article, 120)

    assert [numbers(run) for run in runs] == [[1, 2, 3, 4], [2, 3, 4, 5], [6], [7, 8, 9, 10]]
    for before, after in pairwise(runs):
        assert set(numbers(after)) - set(numbers(before))  # every section shows something new


def facts_of_what_is_shown(prompt: Prompt, messages: list[dict[str, str]]) -> dict[str, Any]:
    """A model that states the first and the last sentence it is shown, citing the numbers it sees."""
    shown = shown_sentences(messages)
    if prompt.meta.name == "sentiment":
        return {"overall": "neutral", "score": 0.0, "sentences": [min(shown)], "entities": []}
    first, last = min(shown), max(shown)
    return {"facts": [{"claim": shown[first], "sentences": [first]}, {"claim": shown[last], "sentences": [last]}]}


async def test_a_long_articles_facts_keep_the_articles_own_sentence_numbers(prompts: dict[str, Prompt]) -> None:
    model = FakeModel(facts_of_what_is_shown)
    runs = sections(LONG, 700)

    extraction = await extract_article(LONG, prompts, model, sequential=True, section_chars=700)

    key_facts = [messages for ref, messages in model.sent if ref.startswith("key_facts")]
    assert [sorted(shown_sentences(m)) for m in key_facts] == [numbers(run) for run in runs]
    # Each section's first and last sentence, by global number; a sentence two sections share is one fact.
    expected = list(dict.fromkeys(n for run in runs for n in (run[0].n, run[-1].n)))
    assert [c.sentence for f in extraction.facts for c in f.citations] == expected
    assert all(f.claim == f.citations[0].quote == LONG.sentence(f.citations[0].sentence).text
               for f in extraction.facts)
    assert [f.id for f in extraction.facts] == [f"F{i}" for i in range(1, len(expected) + 1)]
    prov = extraction.provenance["key_facts"]
    assert (len(prov.calls), prov.reasks, prov.rejected, prov.error) == (len(runs), 0, 0, None)
    # Sentiment is judged on the first section only.
    (sentiment,) = [messages for ref, messages in model.sent if ref.startswith("sentiment")]
    assert sorted(shown_sentences(sentiment)) == numbers(runs[0])
    assert extraction.sentiment is not None and [c.sentence for c in extraction.sentiment.citations] == [1]


async def test_a_section_the_model_fails_on_costs_only_that_sections_facts(prompts: dict[str, Prompt]) -> None:
    runs = sections(LONG, 700)
    broken = set(numbers(runs[1]))

    def answer(prompt: Prompt, messages: list[dict[str, str]]) -> dict[str, Any]:
        if prompt.meta.name == "key_facts" and set(shown_sentences(messages)) == broken:
            return {"facts": "none"}
        return facts_of_what_is_shown(prompt, messages)

    extraction = await extract_article(LONG, prompts, FakeModel(answer), sequential=True, section_chars=700)

    prov = extraction.provenance["key_facts"]
    assert (len(prov.calls), prov.reasks, prov.error) == (len(runs) + 1, 1, None)  # one re-ask for that section
    cited = [c.sentence for f in extraction.facts for c in f.citations]
    assert runs[1][-1].n not in cited and runs[0][-1].n in cited and runs[2][-1].n in cited


def test_the_long_article_is_what_the_tests_assume() -> None:
    article: PreparedArticle = LONG
    assert len(article.sentences) == 30
    assert all(60 <= len(s.text) <= 100 for s in article.sentences)
