"""digest: the service decides what is said and cites it; the model only words the groups it is shown.

The stage takes its model injected (anything with ``complete``); here a scripted double answers,
so these tests pin the service's own rules: which model statements are published, how a group the
model leaves out or words wrongly is published from its verified claim, that no verified fact is
lost, the cap, the one re-ask, the headline, and corroboration counted by independent outlets.
The real client is tested against the fault server.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import (
    ArticleIn,
    ArticleRef,
    Digest,
    Extraction,
    Fact,
    PreparedArticle,
    PromptProvenance,
    Rejection,
    Sentiment,
    Source,
)
from service.errors import InputError, LLMTruncated
from service.pipeline.align import fact_index
from service.pipeline.digest import build_digest
from service.pipeline.text import prepare
from service.pipeline.verify import quotes
from service.prompts import Prompt, PromptRegistry
from tests.pipeline.fakes import scripted

TEXTS: dict[str, PreparedArticle] = {}


def extraction(
    outlet: str, body: str, facts: list[tuple[str, list[int]]], score: float, day: int, language: str = "en"
) -> Extraction:
    article = prepare(
        ArticleIn(outlet=outlet, title=f"{outlet} story", body=body, language=language,
                  published_at=datetime(2025, 6, day, tzinfo=UTC)),
        max_chars=10_000,
    )
    TEXTS[outlet] = article
    return Extraction(
        article=ArticleRef.of(article, f"{outlet.lower()}-1"),
        facts=[
            Fact(id=f"F{i}", claim=claim, citations=quotes(numbers, article))
            for i, (claim, numbers) in enumerate(facts, 1)
        ],
        sentiment=Sentiment(
            overall="positive" if score > 0 else "negative", score=score, citations=quotes([1], article)
        ),
    )


# Three groups (the service's, see test_the_model_is_shown_the_groups_the_service_formed):
# G1 = A1.F1 + A2.F1 (both say 49 percent; two outlets), G2 = A1.F2 (the $29 billion), G3 = A2.F2 (Wang).
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
WIRE = extraction(
    "Wire",
    "Scale AI's founder will join Meta. Meta is building a superintelligence lab.",
    [("Scale AI's founder will join Meta.", [1]), ("Meta is building a superintelligence lab.", [2])],
    0.2,
    13,
)
# A near copy of the Observer: its two sentences word for word, and one of its own.
COPY = extraction(
    "Daily Copy",
    "Meta bought 49 percent of Scale AI. The deal valued Scale AI at $29 billion. Reporting by our staff.",
    [("Meta bought 49 percent of Scale AI.", [1])],
    0.5,
    14,
)

BOUGHT, VALUED, PAID, JOINS = (
    "Meta bought 49 percent of Scale AI.",
    "The deal valued Scale AI at $29 billion.",
    "Meta paid $14.3 billion for 49% of Scale AI.",
    "Wang joins Meta.",
)


def answer(*statements: tuple[str, list[str]], headline: str = "Meta takes 49 percent of Scale AI",
           disagreements: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "headline": headline,
        "statements": [{"text": text, "facts": ids} for text, ids in statements],
        "disagreements": disagreements or [],
    }


def published(digest: Digest) -> list[tuple[str, str, list[str]]]:
    """(written_by, text, cited fact ids) of every statement, the digest's then the also reported."""
    return [(s.written_by, s.text, [c.fact_id for c in s.citations])
            for s in [*digest.statements, *digest.also_reported]]


def cited(digest: Digest) -> list[str]:
    return sorted(c.fact_id for s in [*digest.statements, *digest.also_reported] for c in s.citations)


@pytest.fixture
def prompt(registry: PromptRegistry) -> Prompt:
    return registry.get("digest")


def test_fact_ids_number_articles_in_order() -> None:
    index = fact_index([OBSERVER, TECHBLOG])
    assert list(index) == ["A1.F1", "A1.F2", "A2.F1", "A2.F2"]
    assert index["A2.F2"].fact.claim == JOINS and index["A2.F2"].outlet == "TechBlog"


async def test_the_model_is_shown_the_groups_the_service_formed(prompt: Prompt) -> None:
    model = scripted(answer((BOUGHT, ["A1.F1"])))
    await build_digest([OBSERVER, TECHBLOG], prompt, model)

    user = model.messages[0][1]["content"]
    assert (
        "GROUP 1 (2 outlets):\nA1.F1 (Observer): Meta bought 49 percent of Scale AI.\n"
        "A2.F1 (TechBlog): Meta paid $14.3 billion for 49% of Scale AI.\n" in user
    )
    assert "GROUP 2 (1 outlet):\nA1.F2 (Observer): The deal valued Scale AI at $29 billion.\n" in user
    assert "GROUP 3 (1 outlet):\nA2.F2 (TechBlog): Wang joins Meta.\n" in user
    assert "exactly 3 statements" in user


# --- what is published ---------------------------------------------------------------------------


async def test_a_model_statement_citing_its_groups_ids_is_published_with_exact_citations(prompt: Prompt) -> None:
    model = scripted(answer(
        ("Meta bought 49 percent of Scale AI, TechBlog says for $14.3 billion.", ["A1.F1", "A2.F1"]),
        (VALUED, ["A1.F2"]),
        (JOINS, ["A2.F2"]),
    ))
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model, story_id="s1")

    assert [(s.written_by, s.outlets) for s in digest.statements] == [("model", 2), ("model", 1), ("model", 1)]
    first = digest.statements[0]
    assert first.text == "Meta bought 49 percent of Scale AI, TechBlog says for $14.3 billion."
    assert [c.model_dump() for c in first.citations] == [
        {"fact_id": "A1.F1", "article_id": "observer-1", "outlet": "Observer",
         "published_at": datetime(2025, 6, 13, tzinfo=UTC), "url": None, "sentence": 1, "quote": BOUGHT},
        {"fact_id": "A2.F1", "article_id": "techblog-1", "outlet": "TechBlog",
         "published_at": datetime(2025, 6, 14, tzinfo=UTC), "url": None, "sentence": 1, "quote": PAID},
    ]
    assert digest.also_reported == [] and digest.story_id == "s1"
    assert digest.sentiment is not None and digest.sentiment.overall == "mixed"
    assert digest.provenance is not None
    assert (digest.provenance.reasks, digest.provenance.rejected, len(digest.provenance.calls)) == (0, 0, 1)
    assert digest.provenance.error is None


async def test_a_group_the_model_leaves_out_is_published_from_its_verified_claim(prompt: Prompt) -> None:
    model = scripted(answer(("Meta bought 49 percent of Scale AI.", ["A1.F1", "A2.F1"])))
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model)

    assert published(digest) == [
        ("model", BOUGHT, ["A1.F1", "A2.F1"]),
        ("service", VALUED, ["A1.F2"]),
        ("service", JOINS, ["A2.F2"]),
    ]
    # Leaving groups out is not an unusable answer: no re-ask, nothing counted as rejected.
    assert len(model.messages) == 1
    assert digest.provenance is not None and (digest.provenance.reasks, digest.provenance.rejected) == (0, 0)


async def test_a_statement_with_a_number_not_in_its_cited_facts_is_replaced_by_the_service(prompt: Prompt) -> None:
    model = scripted(answer(
        (BOUGHT, ["A1.F1", "A2.F1"]),
        ("The deal valued Scale AI at $20 billion.", ["A1.F2"]),  # the Observer says 29
        (JOINS, ["A2.F2"]),
    ))
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model)

    assert published(digest) == [
        ("model", BOUGHT, ["A1.F1", "A2.F1"]),
        ("service", VALUED, ["A1.F2"]),
        ("model", JOINS, ["A2.F2"]),
    ]
    assert digest.provenance is not None
    assert (digest.provenance.reasks, digest.provenance.rejected) == (0, 1)  # one of three failed: no re-ask
    assert digest.provenance.rejections == [Rejection(
        item="The deal valued Scale AI at $20 billion.",
        reasons=['statement 2 ("The deal valued Scale AI at $20 billion."): the number(s) 20 are not in the '
                 "cited facts A1.F2"],
    )]


async def test_an_outlet_whose_own_fact_states_a_statement_is_cited_too(prompt: Prompt) -> None:
    model = scripted(answer((BOUGHT, ["A1.F1"]), (VALUED, ["A1.F2"]), (JOINS, ["A2.F2"])))
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model)

    # TechBlog's "49% of Scale AI" states the first statement by itself: it is cited and corroborates.
    assert published(digest) == [
        ("model", BOUGHT, ["A1.F1", "A2.F1"]),
        ("model", VALUED, ["A1.F2"]),
        ("model", JOINS, ["A2.F2"]),
    ]
    assert [s.outlets for s in digest.statements] == [2, 1, 1]


async def test_a_fact_that_states_nothing_of_a_statement_is_not_cited_for_it(prompt: Prompt) -> None:
    model = scripted(answer(
        # A1.F2 (the $29 billion valuation) is padding: none of its words or numbers are in the text.
        (JOINS, ["A2.F2", "A1.F2"]),
        # Each fact carries one of the two figures: both state part of it, both are cited.
        ("Meta paid $14.3 billion; the deal valued Scale AI at $29 billion.", ["A2.F1", "A1.F2"]),
    ))
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model)

    assert published(digest) == [
        ("model", "Meta paid $14.3 billion; the deal valued Scale AI at $29 billion.", ["A2.F1", "A1.F2"]),
        ("service", BOUGHT, ["A1.F1"]),  # G1's other fact, not worded by the model
        ("model", JOINS, ["A2.F2"]),
    ]
    assert [s.outlets for s in digest.statements] == [2, 1, 1]
    assert digest.provenance is not None and (digest.provenance.reasks, digest.provenance.rejected) == (0, 0)


async def test_a_statement_repeating_facts_already_published_is_dropped(prompt: Prompt) -> None:
    model = scripted(answer((BOUGHT, ["A1.F1"]), (PAID, ["A2.F1"]), (VALUED, ["A1.F2"]), (JOINS, ["A2.F2"])))
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model)

    # A2.F1 is already cited by the first statement (it states it too): the second adds no fact.
    assert [s.text for s in digest.statements] == [BOUGHT, VALUED, JOINS]


@pytest.mark.parametrize(
    "statements",
    [
        [],
        [(BOUGHT, ["A1.F1"])],
        [(JOINS, ["A2.F2"]), ("Meta is building a superintelligence lab.", ["A3.F2"])],
        [("Meta paid $99 billion.", ["A2.F1"]), ("Scale AI's founder will join Meta.", ["A3.F1"])],
        [("Scale AI's founder will join Meta.", ["A9.F9"]), (VALUED, ["A1.F2"]), (JOINS, ["A2.F2"])],
    ],
    ids=["nothing", "one", "two-groups", "one-wrong", "unknown-id"],
)
async def test_every_fact_of_every_extraction_is_cited_somewhere(
    prompt: Prompt, statements: list[tuple[str, list[str]]]
) -> None:
    draft = answer(*statements) if statements else {"headline": "x", "statements": []}
    model = scripted(draft, draft)
    digest = await build_digest([OBSERVER, TECHBLOG, WIRE], prompt, model, max_statements=3)

    assert cited(digest) == sorted(fact_index([OBSERVER, TECHBLOG, WIRE]))
    for statement in [*digest.statements, *digest.also_reported]:
        ids = [c.fact_id for c in statement.citations]
        assert len(ids) == len(set(ids))  # each fact at most once per statement
    assert len(digest.statements) == 3


async def test_the_cap_moves_the_rest_to_also_reported_each_cited(prompt: Prompt) -> None:
    # Five groups: the two-outlet 49 percent first, then single facts by how early their article tells them.
    founder = "Scale AI's founder will join Meta."
    model = scripted(answer((BOUGHT, ["A1.F1", "A2.F1"]), (founder, ["A3.F1"])))
    digest = await build_digest([OBSERVER, TECHBLOG, WIRE], prompt, model, max_statements=2)

    assert [(s.written_by, s.text) for s in digest.statements] == [("model", BOUGHT), ("model", founder)]
    assert published(digest)[2:] == [
        ("service", VALUED, ["A1.F2"]),
        ("service", JOINS, ["A2.F2"]),
        ("service", "Meta is building a superintelligence lab.", ["A3.F2"]),
    ]
    # Only the groups within the cap are shown to the model.
    user = model.messages[0][1]["content"]
    assert "exactly 2 statements" in user and "A3.F1 (Wire)" in user
    assert "A1.F2" not in user and "A2.F2" not in user and "A3.F2" not in user


# --- the one re-ask ------------------------------------------------------------------------------


async def test_an_invalid_answer_is_reasked_once_then_the_service_publishes_every_fact(prompt: Prompt) -> None:
    junk = {"headline": "Meta and Scale AI"}  # no statements
    model = scripted(junk, junk)
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model)

    assert len(model.messages) == 2
    assert "statements: Field required" in model.messages[1][-1]["content"]
    assert published(digest) == [
        ("service", BOUGHT, ["A1.F1", "A2.F1"]),
        ("service", VALUED, ["A1.F2"]),
        ("service", JOINS, ["A2.F2"]),
    ]
    assert digest.headline == BOUGHT  # no usable headline: the first statement stands in
    prov = digest.provenance
    assert prov is not None and (prov.reasks, prov.rejected, len(prov.calls)) == (1, 0, 2)
    assert prov.error is not None and prov.error.startswith("no usable digest after a re-ask: statements: Field")


async def test_an_answer_cut_off_twice_is_not_an_error_of_the_story(prompt: Prompt) -> None:
    model = scripted(LLMTruncated("the answer was cut off"), LLMTruncated("the answer was cut off"))
    digest = await build_digest([OBSERVER], prompt, model)

    assert "Give fewer, shorter items." in model.messages[1][-1]["content"]
    assert [(s.written_by, s.text) for s in digest.statements] == [("service", BOUGHT), ("service", VALUED)]
    assert digest.provenance is not None
    assert digest.provenance.error == (
        "no usable digest after a re-ask: the answer was cut off. Give fewer, shorter items.")


async def test_an_unusable_first_answer_is_replaced_by_the_reask(prompt: Prompt) -> None:
    model = scripted({"statements": "none"}, answer((BOUGHT, ["A1.F1", "A2.F1"])))
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model)

    assert [(s.written_by, s.text) for s in digest.statements] == [
        ("model", BOUGHT), ("service", VALUED), ("service", JOINS)]
    assert digest.headline == "Meta takes 49 percent of Scale AI"
    assert digest.provenance is not None and (digest.provenance.reasks, digest.provenance.error) == (1, None)


async def test_only_an_answer_with_more_than_half_its_statements_wrong_is_reasked(prompt: Prompt) -> None:
    # One of two wrong: kept as it is, the wrong one replaced by its group's verified claim.
    half = answer((BOUGHT, ["A1.F1"]), ("Meta paid $20 billion.", ["A2.F1"]))
    model = scripted(half)
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model)
    assert len(model.messages) == 1
    assert digest.provenance is not None and (digest.provenance.reasks, digest.provenance.rejected) == (0, 1)

    # Two of three wrong: asked again, told what is wrong and which fact states the text best.
    wrong = answer((JOINS, ["A1.F1"]), ("Meta paid $20 billion.", ["A2.F1"]), (VALUED, ["A1.F2"]))
    right = answer((JOINS, ["A2.F2"]), (PAID, ["A2.F1"]), (VALUED, ["A1.F2"]))
    model = scripted(wrong, right)
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model)
    reask = model.messages[1][-1]["content"]
    assert 'statement 1 ("Wang joins Meta."): the cited facts A1.F1 do not support this text' in reask
    assert "the fact that states it best is A2.F2" in reask
    assert 'statement 2 ("Meta paid $20 billion."): the number(s) 20 are not in the cited facts A2.F1' in reask
    assert "statement 3" not in reask
    # In the groups' order, not the model's; the Observer's 49 percent does not carry PAID's $14.3 billion,
    # so it is not cited there and the service publishes it beside it.
    assert published(digest) == [
        ("model", PAID, ["A2.F1"]),
        ("service", BOUGHT, ["A1.F1"]),
        ("model", VALUED, ["A1.F2"]),
        ("model", JOINS, ["A2.F2"]),
    ]
    assert digest.provenance is not None and (digest.provenance.reasks, digest.provenance.rejected) == (1, 0)


async def test_a_short_digest_is_not_reasked(prompt: Prompt) -> None:
    # One statement for six facts in five groups: the service publishes the rest, the model is asked once.
    model = scripted(answer((JOINS, ["A2.F2"]), headline="Wang joins Meta"))
    digest = await build_digest([OBSERVER, TECHBLOG, WIRE], prompt, model)

    assert len(model.messages) == 1
    assert [s.written_by for s in digest.statements].count("model") == 1
    assert cited(digest) == sorted(fact_index([OBSERVER, TECHBLOG, WIRE]))


# --- the headline ---------------------------------------------------------------------------------


async def test_the_headline_is_the_models_only_if_the_published_facts_support_it(prompt: Prompt) -> None:
    statements = [(BOUGHT, ["A1.F1"]), (JOINS, ["A2.F2"])]

    digest = await build_digest([OBSERVER, TECHBLOG], prompt, scripted(answer(*statements)))
    assert digest.headline == "Meta takes 49 percent of Scale AI"

    # A number no cited sentence carries.
    model = scripted(answer(*statements, headline="Meta takes 51 percent of Scale AI"))
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model)
    assert digest.headline == BOUGHT

    # True of a verified fact, but one moved past the cap to "also reported": the headline would be the
    # one line an editor reads with no footnote among the statements to check it against.
    model = scripted(answer(*statements, headline="Wang joins Meta"))
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model, max_statements=1)
    assert [s.text for s in digest.also_reported] == [VALUED, JOINS]
    assert digest.headline == BOUGHT


# --- corroboration: outlets, copies ---------------------------------------------------------------


async def test_a_near_copy_is_cited_but_counted_once_in_outlets(prompt: Prompt) -> None:
    draft = answer((BOUGHT, ["A1.F1", "A2.F1", "A3.F1"]), (VALUED, ["A1.F2"]), (JOINS, ["A2.F2"]))
    texts = [TEXTS["Observer"], TEXTS["TechBlog"], TEXTS["Daily Copy"]]

    digest = await build_digest([OBSERVER, TECHBLOG, COPY], prompt, scripted(draft), articles=texts)

    first = digest.statements[0]
    assert [(c.fact_id, c.outlet) for c in first.citations] == [
        ("A1.F1", "Observer"), ("A2.F1", "TechBlog"), ("A3.F1", "Daily Copy")]
    assert first.outlets == 2  # Daily Copy repeats the Observer word for word: one source, not two
    assert [(s.outlet, s.copy_of) for s in digest.sources] == [
        ("Observer", None), ("TechBlog", None), ("Daily Copy", "Observer")]

    # Without the texts the copy cannot be recognised: three outlets.
    digest = await build_digest([OBSERVER, TECHBLOG, COPY], prompt, scripted(draft))
    assert digest.statements[0].outlets == 3
    assert all(s.copy_of is None for s in digest.sources)


# --- disagreements and sources ---------------------------------------------------------------------


async def test_the_models_disagreements_are_ignored(prompt: Prompt) -> None:
    invented = {
        "topic": "What the deal is worth",
        "positions": [
            {"says": "The deal valued Scale AI at $29 billion.", "facts": ["A1.F2"]},
            {"says": "Meta paid $14.3 billion for its stake.", "facts": ["A2.F1"]},
        ],
    }
    model = scripted(answer((BOUGHT, ["A1.F1"]), disagreements=[invented]))
    digest = await build_digest([OBSERVER, TECHBLOG], prompt, model)

    assert digest.disagreements == []
    assert len(model.messages) == 1


async def test_outlets_giving_different_amounts_are_a_disagreement_found_by_the_service(prompt: Prompt) -> None:
    herald = extraction("Herald", "The city awarded Acme a contract worth $12 million on Monday.",
                        [("The city awarded Acme a contract worth $12 million on Monday.", [1])], 0.1, 2)
    courier = extraction("Courier", "The city awarded Acme a contract worth $15 million on Monday.",
                         [("The city awarded Acme a contract worth $15 million on Monday.", [1])], 0.1, 2)
    model = scripted(answer(("The city awarded Acme a contract.", ["A1.F1", "A2.F1"]), headline="Acme wins"))

    digest = await build_digest([herald, courier], prompt, model, articles=[TEXTS["Courier"], TEXTS["Herald"]])

    (disagreement,) = digest.disagreements
    assert disagreement.written_by == "service" and disagreement.kind == "amount"
    assert [(p.outlets, [(c.fact_id, c.sentence) for c in p.citations]) for p in disagreement.positions] == [
        (["Herald"], [("A1.F1", 1)]),
        (["Courier"], [("A2.F1", 1)]),
    ]

    # Without the texts the service reads no sentence, so it finds nothing.
    model = scripted(answer(("The city awarded Acme a contract.", ["A1.F1", "A2.F1"]), headline="Acme wins"))
    assert (await build_digest([herald, courier], prompt, model)).disagreements == []


async def test_sources_carry_verified_facts_rejections_and_failures(prompt: Prompt) -> None:
    rejection = Rejection(item="Meta bought all of Scale AI.", reasons=["fact 3: sentence 9 does not exist"])
    prov = PromptProvenance(prompt="key_facts@3", prompt_hash="h", model="m", mode="json_object",
                            rejected=1, rejections=[rejection])
    observer = OBSERVER.model_copy(update={"provenance": {"key_facts": prov}})
    empty = TECHBLOG.model_copy(update={"facts": [], "provenance": {
        "key_facts": prov.model_copy(update={"error": "no usable answer after a re-ask: not JSON"})}})
    spanish = extraction("Diario", "Meta compró el 49 por ciento de Scale AI.",
                         [("Meta compró el 49 por ciento de Scale AI.", [1])], 0.3, 13, language="es")

    digest = await build_digest([observer, empty, spanish], prompt, scripted(answer((BOUGHT, ["A1.F1"]))))

    assert [(s.outlet, s.status, s.facts, s.error) for s in digest.sources] == [
        ("Observer", "used", 2, None),
        ("Diario", "other_language", 1, None),
        ("TechBlog", "failed", 0, "no usable answer after a re-ask: not JSON"),
    ]
    assert digest.sources[0].verified == OBSERVER.facts and digest.sources[0].rejected == [rejection]
    assert digest.sources[2].rejected == [rejection]


async def test_other_sources_are_listed_after_the_used_ones(prompt: Prompt) -> None:
    other = Source.of(TECHBLOG.article, status="duplicate", error="same text as TechBlog")
    digest = await build_digest([OBSERVER], prompt, scripted(answer((BOUGHT, ["A1.F1"]))), other_sources=[other])
    assert [(s.outlet, s.status) for s in digest.sources] == [("Observer", "used"), ("TechBlog", "duplicate")]


async def test_no_verified_fact_is_a_clear_input_error(prompt: Prompt) -> None:
    empty = OBSERVER.model_copy(update={"facts": []})
    model = scripted()
    with pytest.raises(InputError, match="no article of this story produced a verified fact"):
        await build_digest([empty], prompt, model)
    assert model.messages == []  # refused before any call
