"""align: verified facts grouped by what they are about; corroboration counted by independent outlets."""

from __future__ import annotations

from schemas import ArticleRef, Extraction, Fact
from service.pipeline.align import align, copies_of, fact_index
from service.pipeline.verify import quotes
from tests.factories import prepared


def told(outlet: str, *sentences: str) -> tuple[Extraction, set[str]]:
    """An article whose facts are its sentences, one each, and the set of its sentences (for copies)."""
    article = prepared(" ".join(sentences), outlet=outlet)
    facts = [Fact(id=f"F{s.n}", claim=s.text, citations=quotes([s.n], article)) for s in article.sentences]
    return Extraction(article=ArticleRef.of(article), facts=facts), {s.text for s in article.sentences}


HERALD, HERALD_TEXT = told(
    "Herald",
    "The city council approved a budget of $4.2 million on Monday.",
    "Mayor Jane Doe promised three new schools.",
    "The vote was 7 to 2.",
)
WIRE, WIRE_TEXT = told(
    "Wire",
    "Councillors passed the $4.2 million spending plan.",
    "Police arrested 7 people after the match.",
    "Jane Doe said the money will pay for three new schools.",
)
# The Herald's text again, with a byline of its own: a wire copy, not a second source.
COPY, COPY_TEXT = told(
    "Reprint Daily",
    "The city council approved a budget of $4.2 million on Monday.",
    "Mayor Jane Doe promised three new schools.",
    "The vote was 7 to 2.",
    "This story was first published by the Herald.",
)


def grouped(extractions: list[Extraction], copies: dict[int, int] | None = None) -> list[list[str]]:
    return [[f.fact_id for f in g.facts] for g in align(fact_index(extractions), copies)]


def test_facts_with_the_same_amount_from_two_outlets_share_a_group() -> None:
    groups = align(fact_index([HERALD, WIRE]))

    budget = next(g for g in groups if any(f.fact_id == "A1.F1" for f in g.facts))
    assert [f.fact_id for f in budget.facts] == ["A1.F1", "A2.F1"]
    assert budget.outlets == ["Herald", "Wire"] and budget.corroboration == 2


def test_facts_sharing_a_name_and_most_of_their_words_share_a_group() -> None:
    groups = grouped([HERALD, WIRE])
    assert ["A1.F2", "A2.F3"] in groups  # Jane Doe's three new schools, in other words


def test_unrelated_facts_and_small_numbers_alone_do_not_group() -> None:
    groups = grouped([HERALD, WIRE])

    # "7 to 2" and "arrested 7 people" share only a small count: no group.
    assert ["A1.F3"] in groups and ["A2.F2"] in groups
    assert sorted(i for g in groups for i in g) == sorted(fact_index([HERALD, WIRE]))  # each fact exactly once
    assert len(groups) == 4


def test_groups_are_ordered_by_corroboration_then_by_how_early_they_are_told() -> None:
    groups = align(fact_index([HERALD, WIRE]))

    assert [[f.fact_id for f in g.facts] for g in groups] == [
        ["A1.F1", "A2.F1"],  # two outlets, told first
        ["A1.F2", "A2.F3"],  # two outlets, told later
        ["A2.F2"],  # one outlet, its article's second fact
        ["A1.F3"],  # one outlet, its article's third fact
    ]
    assert [g.id for g in groups] == ["G1", "G2", "G3", "G4"]
    assert [g.corroboration for g in groups] == [2, 2, 1, 1]


def test_a_near_copy_is_recognised_and_counted_once() -> None:
    extractions = [HERALD, WIRE, COPY]
    copies = copies_of(extractions, {1: HERALD_TEXT, 2: WIRE_TEXT, 3: COPY_TEXT})
    assert copies == {3: 1}

    budget = align(fact_index(extractions), copies)[0]
    assert [f.fact_id for f in budget.facts] == ["A1.F1", "A2.F1", "A3.F1"]
    assert budget.outlets == ["Herald", "Wire", "Reprint Daily"]  # cited...
    assert budget.corroboration == 2  # ...but the copy adds no corroboration

    assert align(fact_index(extractions))[0].corroboration == 3  # not knowing the copy, three


def test_a_copy_of_a_copy_counts_as_the_original_and_different_texts_are_no_copies() -> None:
    second_copy, second_text = told("Aggregator", *sorted(COPY_TEXT))
    extractions = [HERALD, COPY, second_copy, WIRE]
    assert copies_of(extractions, {1: HERALD_TEXT, 2: COPY_TEXT, 3: second_text, 4: WIRE_TEXT}) == {2: 1, 3: 1}
    assert copies_of([HERALD, WIRE], {1: HERALD_TEXT, 2: WIRE_TEXT}) == {}
    assert copies_of([HERALD, COPY], {1: HERALD_TEXT}) == {}  # a text not given is no evidence of a copy
