"""digest: fact ids mapped to exact sentences, corroboration and disagreements computed by the service.

The stage takes its model injected (anything with ``complete``); here a scripted double answers,
so these tests pin the service's own rules. The real client is tested against the fault server.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import ArticleIn, CallUsage, Extraction, Fact, Sentiment
from service.errors import InputError, LLMOutputError
from service.llm.port import Completion
from service.pipeline.digest import build_digest, fact_index
from service.pipeline.extract import article_ref
from service.pipeline.text import prepare
from service.pipeline.verify import quotes
from service.prompts import Prompt, PromptRegistry


class ScriptedModel:
    """Answers each call with the next scripted JSON object and keeps the messages it was sent."""

    model = "scripted"
    mode = "json_object"

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)
        self.sent: list[list[dict[str, str]]] = []

    async def complete(self, prompt: Prompt, messages: list[dict[str, str]]) -> Completion:
        self.sent.append(messages)
        data = self.answers.pop(0)
        usage = CallUsage(
            prompt=prompt.ref,
            prompt_hash=prompt.sha256,
            model=self.model,
            mode=self.mode,
            input_tokens=100,
            output_tokens=20,
        )
        return Completion(data=data, content=json.dumps(data), usage=usage)


def extraction(outlet: str, body: str, facts: list[tuple[str, list[int]]], score: float, day: int) -> Extraction:
    article = prepare(
        ArticleIn(outlet=outlet, title=f"{outlet} story", body=body, published_at=datetime(2025, 6, day, tzinfo=UTC)),
        max_chars=10_000,
    )
    return Extraction(
        article=article_ref(article),
        facts=[
            Fact(id=f"F{i}", claim=claim, citations=quotes(numbers, article))
            for i, (claim, numbers) in enumerate(facts, 1)
        ],
        sentiment=Sentiment(
            overall="positive" if score > 0 else "negative", score=score, citations=quotes([1], article)
        ),
    )


OBSERVER = extraction(
    "Observer",
    "Meta bought 49 percent of Scale AI. The deal valued Scale AI at $29 billion.",
    [("Meta bought 49 percent of Scale AI.", [1]), ("The deal valued Scale AI at $29 billion.", [2])],
    0.5,
    13,
)
TECHBLOG = extraction(
    "TechBlog",
    "Meta paid $14.3 billion for 49% of Scale AI. Wang joins Meta.",
    [("Meta paid $14.3 billion for 49% of Scale AI.", [1]), ("Wang joins Meta.", [2])],
    -0.5,
    14,
)


@pytest.fixture
def prompt(registry: PromptRegistry) -> Prompt:
    return registry.get("digest")


async def test_statements_cite_exact_sentences_and_count_outlets(prompt: Prompt) -> None:
    model = ScriptedModel(
        {
            "headline": "Meta takes 49 percent of Scale AI",
            "statements": [
                {"text": "Meta bought 49 percent of Scale AI.", "facts": ["A1.F1", "A2.F1"]},
                {"text": "Wang joins Meta.", "facts": ["A2.F2"]},
            ],
            "disagreements": [
                {
                    "topic": "What the deal is worth",
                    "positions": [
                        {"says": "The deal valued Scale AI at $29 billion.", "facts": ["A1.F2"]},
                        {"says": "Meta paid $14.3 billion for its stake.", "facts": ["A2.F1"]},
                    ],
                }
            ],
        }
    )
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model, story_id="s1")

    first, second = digest.statements
    assert [(c.outlet, c.sentence, c.quote) for c in first.citations] == [
        ("Observer", 1, "Meta bought 49 percent of Scale AI."),
        ("TechBlog", 1, "Meta paid $14.3 billion for 49% of Scale AI."),
    ]
    assert (first.outlets, second.outlets) == (2, 1)
    assert first.citations[0].published_at == datetime(2025, 6, 13, tzinfo=UTC)
    [disagreement] = digest.disagreements
    assert [p.outlets for p in disagreement.positions] == [["Observer"], ["TechBlog"]]
    assert "A1.F1: Meta bought 49 percent of Scale AI." in model.sent[0][1]["content"]
    assert digest.sentiment is not None and digest.sentiment.overall == "mixed"
    assert digest.provenance is not None and (digest.provenance.reasks, digest.provenance.rejected) == (0, 0)


async def test_unknown_ids_are_reasked_once_then_dropped_and_counted(prompt: Prompt) -> None:
    bad = {
        "headline": "Meta and Scale AI",
        "statements": [
            {"text": "Meta bought 49 percent of Scale AI.", "facts": ["A1.F1"]},
            {"text": "Scale AI is worth $29 billion.", "facts": ["F9"]},
        ],
        "disagreements": [],
    }
    model = ScriptedModel(bad, bad)
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model)

    assert "unknown fact id(s) F9" in model.sent[1][-1]["content"]
    assert [s.text for s in digest.statements] == ["Meta bought 49 percent of Scale AI."]
    assert digest.provenance is not None
    assert (digest.provenance.reasks, digest.provenance.rejected, len(digest.provenance.calls)) == (1, 1, 2)


async def test_a_number_not_in_the_cited_sentences_is_not_published(prompt: Prompt) -> None:
    answer = {
        "headline": "Meta pays $20 billion",
        "statements": [
            {"text": "Meta paid $20 billion for Scale AI.", "facts": ["A2.F1"]},
            {"text": "Wang joins Meta.", "facts": ["A2.F2"]},
        ],
        "disagreements": [],
    }
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, ScriptedModel(answer, answer))
    assert [s.text for s in digest.statements] == ["Wang joins Meta."]
    assert digest.headline == "Wang joins Meta."  # the unsupported headline falls back to a cited statement


async def test_an_outlet_whose_own_fact_states_a_statement_is_cited_too(prompt: Prompt) -> None:
    answer = {
        "headline": "Meta takes 49 percent of Scale AI",
        "statements": [
            {"text": "Meta bought 49 percent of Scale AI.", "facts": ["A1.F1"]},  # TechBlog says so as well
            {"text": "The deal valued Scale AI at $29 billion.", "facts": ["A1.F2"]},  # only the Observer
            {"text": "Wang joins Meta.", "facts": ["A2.F2"]},  # only TechBlog
        ],
        "disagreements": [],
    }
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, ScriptedModel(answer))

    bought, valued, joins = digest.statements
    assert [(c.fact_id, c.outlet, c.quote) for c in bought.citations] == [
        ("A1.F1", "Observer", "Meta bought 49 percent of Scale AI."),
        ("A2.F1", "TechBlog", "Meta paid $14.3 billion for 49% of Scale AI."),
    ]
    assert (bought.outlets, valued.outlets, joins.outlets) == (2, 1, 1)
    assert [c.fact_id for c in valued.citations] == ["A1.F2"]


async def test_a_headline_true_only_of_an_unpublished_fact_is_replaced(prompt: Prompt) -> None:
    # "$14.3 billion" is in a verified fact (A2.F1), but no published statement cites it: the headline
    # would be the one line an editor reads with no footnote to check it against.
    answer = {
        "headline": "Meta acquires Scale AI for $14.3 billion",
        "statements": [{"text": "Meta bought 49 percent of Scale AI.", "facts": ["A1.F1"]}],
        "disagreements": [],
    }
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, ScriptedModel(answer))
    assert digest.headline == "Meta bought 49 percent of Scale AI."

    answer["headline"] = "Meta takes 49 percent of Scale AI"
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, ScriptedModel(answer))
    assert digest.headline == "Meta takes 49 percent of Scale AI"


WIRE = extraction(
    "Wire",
    "Scale AI's founder will join Meta. Meta is building a superintelligence lab.",
    [("Scale AI's founder will join Meta.", [1]), ("Meta is building a superintelligence lab.", [2])],
    0.2,
    13,
)


async def test_a_digest_under_half_as_long_as_asked_is_reasked_once_for_the_facts_it_left_out(
    prompt: Prompt,
) -> None:
    one = {"headline": "Wang joins Meta", "statements": [{"text": "Wang joins Meta.", "facts": ["A2.F2"]}],
           "disagreements": []}
    two = {"headline": "Wang joins Meta", "statements": [{"text": "Wang joins Meta.", "facts": ["A2.F2"]},
           {"text": "The deal valued Scale AI at $29 billion.", "facts": ["A1.F2"]}], "disagreements": []}
    model = ScriptedModel(one, two)
    digest = await build_digest([OBSERVER, TECHBLOG, WIRE], prompt, model)  # 6 facts: 3 statements asked

    assert "the digest has 1 statement(s) but 3 were asked for" in model.sent[1][-1]["content"]
    assert "A1.F1, A1.F2, A2.F1, A3.F1, A3.F2" in model.sent[1][-1]["content"]  # the facts it left out
    assert [s.text for s in digest.statements] == ["Wang joins Meta.", "The deal valued Scale AI at $29 billion."]
    assert digest.provenance is not None and (digest.provenance.reasks, len(digest.provenance.calls)) == (1, 2)

    # A second answer that publishes no more than the first does not replace it.
    worse = {"headline": "x", "statements": [{"text": "Meta paid $99 billion.", "facts": ["A2.F1"]}],
             "disagreements": []}
    digest = await build_digest([OBSERVER, TECHBLOG, WIRE], prompt, ScriptedModel(one, worse))
    assert [s.text for s in digest.statements] == ["Wang joins Meta."]
    assert digest.provenance is not None and digest.provenance.rejected == 0

    # Two of three is close enough: no second call.
    model = ScriptedModel(two)
    digest = await build_digest([OBSERVER, TECHBLOG, WIRE], prompt, model)
    assert len(model.sent) == 1 and len(digest.statements) == 2


async def test_a_fact_that_states_nothing_of_a_statement_is_not_cited_for_it(prompt: Prompt) -> None:
    answer = {
        "headline": "Wang joins Meta",
        "statements": [
            # A1.F2 (the $29 billion valuation) is padding: none of its words or numbers are in the text.
            {"text": "Wang joins Meta.", "facts": ["A2.F2", "A1.F2"]},
            # Each fact carries one of the two figures: both state part of it, both are cited.
            {"text": "Meta paid $14.3 billion; the deal valued Scale AI at $29 billion.", "facts": ["A2.F1", "A1.F2"]},
        ],
        "disagreements": [],
    }
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, ScriptedModel(answer))

    joins, paid = digest.statements
    assert [(c.fact_id, c.outlet) for c in joins.citations] == [("A2.F2", "TechBlog")]
    assert joins.outlets == 1
    assert [(c.fact_id, c.outlet) for c in paid.citations] == [("A2.F1", "TechBlog"), ("A1.F2", "Observer")]
    assert digest.provenance is not None and (digest.provenance.reasks, digest.provenance.rejected) == (0, 0)


async def test_sides_that_say_the_same_thing_are_not_a_disagreement(prompt: Prompt) -> None:
    answer = {
        "headline": "Meta takes 49 percent of Scale AI",
        "statements": [{"text": "Meta bought 49 percent of Scale AI.", "facts": ["A1.F1"]}],
        "disagreements": [
            {
                "topic": "Meta stake in Scale AI",
                "positions": [
                    {"says": "Meta bought 49 percent of Scale AI.", "facts": ["A1.F1"]},
                    {"says": "Meta bought 49% of Scale AI.", "facts": ["A2.F1"]},
                ],
            }
        ],
    }
    model = ScriptedModel(answer, answer)
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model)
    assert digest.disagreements == []
    assert "the sides report the same thing" in model.sent[1][-1]["content"]


async def test_one_source_has_no_disagreements_and_nothing_is_refused(prompt: Prompt) -> None:
    answer = {
        "headline": "Meta bought 49 percent of Scale AI",
        "statements": [{"text": "Meta bought 49 percent of Scale AI.", "facts": ["A1.F1"]}],
        "disagreements": [],
    }
    digest = await build_digest([OBSERVER], prompt, ScriptedModel(answer))
    assert digest.disagreements == [] and [s.outlet for s in digest.sources] == ["Observer"]


async def test_no_facts_or_no_usable_answer_are_clear_errors(prompt: Prompt) -> None:
    empty = OBSERVER.model_copy(update={"facts": []})
    with pytest.raises(InputError, match="no article of this story produced a verified fact"):
        await build_digest([empty], prompt, ScriptedModel())
    junk = {"headline": "x"}
    with pytest.raises(LLMOutputError, match="no usable digest after a re-ask"):
        await build_digest([OBSERVER], prompt, ScriptedModel(junk, junk))


def test_fact_ids_number_articles_in_order() -> None:
    index = fact_index([OBSERVER, TECHBLOG])
    assert sorted(index) == ["A1.F1", "A1.F2", "A2.F1", "A2.F2"]
    assert index["A2.F2"].fact.claim == "Wang joins Meta."


async def test_a_statement_citing_the_wrong_fact_is_told_which_fact_states_it(prompt: Prompt) -> None:
    wrong = {"headline": "Wang joins Meta", "statements": [{"text": "Wang joins Meta.", "facts": ["A1.F1"]}],
             "disagreements": []}
    right = {"headline": "Wang joins Meta", "statements": [{"text": "Wang joins Meta.", "facts": ["A2.F2"]}],
             "disagreements": []}
    model = ScriptedModel(wrong, right)
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model)
    assert "the fact that states it best is A2.F2" in model.sent[1][-1]["content"]
    assert [c.quote for c in digest.statements[0].citations] == ["Wang joins Meta."]
    assert digest.provenance is not None and (digest.provenance.reasks, digest.provenance.rejected) == (1, 0)
