"""verify: planted bad citations, numbers and dates are caught; good ones pass."""

from __future__ import annotations

import pytest

from schemas import EntitySentimentDraft, FactDraft, SentimentDraft
from service.pipeline.verify import entity_problems, fact_problems, numbers_in, quotes, repeats, sentiment_problems
from tests.factories import prepared

ARTICLE = prepared(
    "Meta paid $14.3 billion for a 49 percent stake in Scale AI. "
    "Alexandr Wang, 28, announced on June 12 that he will step down as chief executive. "
    "The deal values Scale AI at $29 billion, a source said. "
    "Investors cheered the agreement."
)


@pytest.mark.parametrize(
    ("claim", "sentences"),
    [
        ("Meta paid $14.3 billion for a 49% stake in Scale AI.", [1]),
        ("Wang announced on June 12 that he will step down as CEO.", [2]),
        ("Scale AI is valued at $29 billion after Meta's $14.3 billion stake.", [1, 3]),
    ],
)
def test_supported_claims_pass(claim: str, sentences: list[int]) -> None:
    assert fact_problems(FactDraft(claim=claim, sentences=sentences), ARTICLE) == []


@pytest.mark.parametrize(
    ("claim", "sentences", "problem"),
    [
        ("Meta paid $14.3 billion for Scale AI.", [9], "sentence 9 does not exist (the article has sentences 1 to 4)"),
        ("Meta paid $14.3 billion for Scale AI.", [0], "sentence 0 does not exist (the article has sentences 1 to 4)"),
        ("Meta paid $15 billion for Scale AI.", [1], "the number(s) 15 do not appear in sentence(s) 1"),
        ("Meta paid $29 billion for a stake in Scale AI.", [1], "the number(s) 29 do not appear in sentence(s) 1"),
        ("Wang announced in July 12 he will step down.", [2], "the date(s) july do not appear in sentence(s) 2"),
        (
            "Apple launched a new phone in Paris.",
            [4],
            "sentence(s) 4 do not state this claim (too few of its words appear there)",
        ),
        ("Meta paid $14.3 billion for Scale AI.", [1, 1], "it cites the same sentence twice"),
    ],
)
def test_planted_problems_are_named(claim: str, sentences: list[int], problem: str) -> None:
    assert problem in fact_problems(FactDraft(claim=claim, sentences=sentences), ARTICLE)


def test_thousands_separators_and_trailing_dots_are_one_number() -> None:
    assert numbers_in("1,117,320,768 bytes and 14.3.") == {"1117320768", "14.3"}


def test_may_is_a_month_only_next_to_a_day() -> None:
    article = prepared("Wang may leave Scale AI soon, the report says.")
    assert fact_problems(FactDraft(claim="Wang may leave Scale AI soon.", sentences=[1]), article) == []
    assert "the date(s) may do not appear in sentence(s) 1" in fact_problems(
        FactDraft(claim="Wang leaves Scale AI on May 3.", sentences=[1]), article
    )


def test_sentiment_label_must_agree_with_score_and_entities_must_be_named() -> None:
    draft = SentimentDraft(overall="positive", score=-0.4, sentences=[4], entities=[])
    assert sentiment_problems(draft, ARTICLE) == ["label positive needs a score above 0, not -0.4"]
    named = EntitySentimentDraft(entity="Alexandr Wang", label="neutral", score=0.0, sentences=[2])
    unnamed = EntitySentimentDraft(entity="Alexandr Wang", label="neutral", score=0.0, sentences=[4])
    assert entity_problems(named, ARTICLE) == []
    assert entity_problems(unnamed, ARTICLE) == ["sentence(s) 4 do not name 'Alexandr Wang'"]


def test_quotes_are_the_exact_sentences() -> None:
    assert [q.quote for q in quotes([3, 1], ARTICLE)] == [
        "The deal values Scale AI at $29 billion, a source said.",
        "Meta paid $14.3 billion for a 49 percent stake in Scale AI.",
    ]


def test_a_wrongly_cited_claim_is_told_which_sentence_states_it() -> None:
    problems = fact_problems(FactDraft(claim="Investors cheered the agreement.", sentences=[1]), ARTICLE)
    assert problems == [
        "sentence(s) 1 do not state this claim (too few of its words appear there)",
        "the sentence that states it best is 4",
    ]
    unrelated = fact_problems(FactDraft(claim="Apple launched a phone in Paris.", sentences=[4]), ARTICLE)
    assert not any("states it best" in p for p in unrelated)


def test_a_sentence_that_only_pads_a_citation_is_named() -> None:
    padded = FactDraft(claim="Meta paid $14.3 billion for a 49 percent stake in Scale AI.", sentences=[1, 4])
    assert fact_problems(padded, ARTICLE) == [
        "sentence(s) 4 say little of this claim; cite only sentences that state it"]
    both = FactDraft(claim="Scale AI is valued at $29 billion after Meta's $14.3 billion stake.", sentences=[1, 3])
    assert fact_problems(both, ARTICLE) == []


def test_a_second_wording_of_one_fact_is_a_repeat_but_a_second_fact_of_one_sentence_is_not() -> None:
    kept = [("Alexandr Wang will step down as chief executive, he announced on June 12.", [2])]

    # Same sentence, nearly the same words, no new number: one fact written twice.
    assert repeats("Wang announced on June 12 that he will step down as chief executive.", [2], kept)
    assert repeats("alexandr wang will  step down as chief executive, he announced on June 12.", [3], kept)
    assert not repeats("Wang, 28, made the announcement on June 12.", [2], kept)  # a new number: another fact
    assert not repeats("Wang announced on June 12 that he will step down as chief executive.", [2, 3], kept)
    assert not repeats("Meta paid $14.3 billion.", [1], [("Meta took a 49 percent stake.", [1])])
