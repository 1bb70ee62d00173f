"""verify.repair: a wrongly cited claim is re-pointed to the sentences that state it; the claim is never edited."""

from __future__ import annotations

import pytest

from service.pipeline.extract import extract_facts
from service.pipeline.verify import claim_problems, repair
from service.prompts import Prompt, PromptRegistry
from tests.factories import prepared
from tests.pipeline.fakes import scripted

ARTICLE = prepared(
    "The city council met on Monday evening. "
    "It approved a budget of $4.2 million for the new school year. "
    "The vote was 7 to 2 after a long debate. "
    "Mayor Jane Doe praised the council."
)
BUDGET = "The council approved a budget of $4.2 million."
INVENTED = "The council approved a budget of $5.9 million."


@pytest.fixture
def prompt(registry: PromptRegistry) -> Prompt:
    return registry.get("key_facts")


def test_a_claim_citing_a_neighbour_is_re_pointed_to_the_sentence_holding_its_number() -> None:
    assert claim_problems(BUDGET, [1], ARTICLE)  # sentence 1 does not carry 4.2

    assert repair(BUDGET, [1], ARTICLE) == [2]
    assert repair(BUDGET, [3], ARTICLE) == [2]
    assert claim_problems(BUDGET, [2], ARTICLE) == []


def test_a_claim_two_sentences_state_together_is_re_pointed_to_both() -> None:
    claim = "The council approved $4.2 million and the vote was 7 to 2."
    assert repair(claim, [1], ARTICLE) == [2, 3]
    assert claim_problems(claim, [2, 3], ARTICLE) == []


def test_among_sentences_that_state_it_equally_the_one_nearest_the_cited_wins() -> None:
    article = prepared(
        "The budget is $4.2 million. Officials met at noon. Others talked at length. "
        "The budget is $4.2 million, officials said. Then came lunch."
    )
    claim = "The budget is $4.2 million."
    assert repair(claim, [2], article) == [1]
    assert repair(claim, [3], article) == [4]


@pytest.mark.parametrize(
    ("claim", "cited"),
    [
        (INVENTED, [2]),  # a number no sentence carries
        ("The mayor resigned in disgrace.", [4]),  # words no sentence has
        ("The council approved a budget of $4.2 million in March.", [2]),  # a date no sentence gives
        ("7 to 2", [1]),  # nothing but numbers: no words to state it
    ],
    ids=["invented-number", "invented-words", "invented-date", "no-words"],
)
def test_a_claim_no_sentence_supports_is_not_repaired(claim: str, cited: list[int]) -> None:
    assert repair(claim, cited, ARTICLE) is None


def test_a_citation_out_of_range_is_repaired_like_any_other() -> None:
    assert repair(BUDGET, [99], ARTICLE) == [2]
    assert repair(BUDGET, [], ARTICLE) == [2]


async def test_a_repaired_fact_keeps_its_claim_and_the_models_citation_and_is_counted(prompt: Prompt) -> None:
    model = scripted({"facts": [{"claim": BUDGET, "sentences": [1]}]})

    facts, prov = await extract_facts(ARTICLE, prompt, model)

    (fact,) = facts
    assert fact.claim == BUDGET  # as the model wrote it, not the sentence's wording
    assert [(c.sentence, c.quote) for c in fact.citations] == [
        (2, "It approved a budget of $4.2 million for the new school year.")]
    assert fact.repaired_from == [1]
    assert (prov.repaired, prov.reasks, prov.rejected, len(prov.calls)) == (1, 0, 0, 1)  # no re-ask needed


async def test_only_what_cannot_be_repaired_is_re_asked(prompt: Prompt) -> None:
    vote = {"claim": "The vote was 7 to 2 after a long debate.", "sentences": [3]}
    model = scripted(
        {"facts": [vote, {"claim": BUDGET, "sentences": [4]}, {"claim": INVENTED, "sentences": [2]}]},
        {"facts": [{"claim": INVENTED, "sentences": [2]}]},  # the model insists
    )

    facts, prov = await extract_facts(ARTICLE, prompt, model)

    assert [(f.claim, [c.sentence for c in f.citations], f.repaired_from) for f in facts] == [
        (vote["claim"], [3], None),
        (BUDGET, [2], [4]),
    ]
    assert (prov.repaired, prov.reasks, prov.rejected) == (1, 1, 1)
    assert [r.item for r in prov.rejections] == [INVENTED]
    reask = model.sent[-1][1][-1]["content"]
    assert "5.9" in reask and "fact 3" in reask and "fact 2" not in reask


async def test_a_repair_that_restates_a_kept_fact_is_dropped_and_not_counted(prompt: Prompt) -> None:
    sentence = ARTICLE.sentence(2).text
    model = scripted({"facts": [{"claim": sentence, "sentences": [2]}, {"claim": sentence, "sentences": [1]}]})

    facts, prov = await extract_facts(ARTICLE, prompt, model)

    assert [(f.claim, f.repaired_from) for f in facts] == [(sentence, None)]
    assert (prov.repaired, prov.rejected) == (0, 0)
