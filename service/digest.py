"""digest: merge the verified facts of a story's articles into one cited digest.

The model sees only verified facts, each with an id like ``A2.F3``, and answers with
statements and disagreements that cite those ids. The service checks every id, that each
statement's numbers and dates are in the sentences it cites, and that each disagreement
really sets different outlets against each other; it re-asks once, then drops what still
fails. Citations, corroboration and sentiment are computed here, never taken from the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from schemas import (
    Citation,
    Digest,
    DigestDraft,
    Disagreement,
    Extraction,
    Fact,
    Position,
    PositionDraft,
    PromptProvenance,
    Rejection,
    Source,
    Statement,
)
from service import metrics
from service.errors import InputError, LLMOutputError
from service.extract import Completer, ask_model, reask_messages, validation_lines
from service.prompts import Prompt
from service.sentiment import aggregate
from service.text import clean_inline
from service.verify import MIN_SENTENCE_SHARE, closest, content_words, months_in, numbers_in

MIN_STATEMENT_OVERLAP = 0.5
#: Sides sharing this much of their wording, with no number of their own, report the same thing.
SAME_SIDE_OVERLAP = 0.6


def statement_count(facts: int) -> int:
    """How many statements to ask for: small models follow an exact count better than a range."""
    return max(1, min(8, facts // 2, max(3, facts // 3)))


_FACT_ID = re.compile(r"^A(\d+)\.F(\d+)$")


@dataclass(frozen=True)
class CitedFact:
    fact_id: str
    article: int
    extraction: Extraction
    fact: Fact


def fact_index(extractions: list[Extraction]) -> dict[str, CitedFact]:
    """``A<n>.F<m>`` for every verified fact, articles numbered in the order given."""
    return {
        f"A{n}.{fact.id}": CitedFact(f"A{n}.{fact.id}", n, extraction, fact)
        for n, extraction in enumerate(extractions, 1)
        for fact in extraction.facts
    }


def citations_for(ids: list[str], index: dict[str, CitedFact]) -> list[Citation]:
    cited = []
    for fact_id in dict.fromkeys(ids):
        entry = index[fact_id]
        ref = entry.extraction.article
        cited += [
            Citation(
                fact_id=fact_id,
                article_id=ref.article_id,
                outlet=ref.outlet,
                published_at=ref.published_at,
                url=ref.url,
                sentence=q.sentence,
                quote=q.quote,
            )
            for q in entry.fact.citations
        ]
    return cited


def text_problems(text: str, ids: list[str], index: dict[str, CitedFact], *, min_overlap: float) -> list[str]:
    """Unknown ids, and numbers, dates or words the cited sentences do not carry; with the fact that
    states the text best named, since a small model most often cites a neighbouring id."""
    problems = _text_problems(text, ids, index, min_overlap=min_overlap)
    if problems:
        hint = closest(text, {fact_id: entry.fact.claim for fact_id, entry in index.items()})
        if hint is not None and hint not in ids:
            problems.append(f"the fact that states it best is {hint}")
    return problems


def _evidence(ids: list[str], index: dict[str, CitedFact]) -> str:
    """What the facts ``ids`` put on record: their claims and the exact sentences they cite."""
    return " ".join(index[i].fact.claim + " " + " ".join(q.quote for q in index[i].fact.citations) for i in ids)


def _text_problems(text: str, ids: list[str], index: dict[str, CitedFact], *, min_overlap: float) -> list[str]:
    unknown = [i for i in ids if i not in index]
    if unknown:
        return [f"unknown fact id(s) {', '.join(unknown)}; cite only ids listed in the articles"]
    evidence = _evidence(ids, index)
    problems = []
    if missing := sorted(numbers_in(text) - numbers_in(evidence)):
        problems.append(f"the number(s) {', '.join(missing)} are not in the cited facts {', '.join(ids)}")
    if missing_months := sorted(months_in(text) - months_in(evidence)):
        problems.append(f"the date(s) {', '.join(missing_months)} are not in the cited facts {', '.join(ids)}")
    words = content_words(text)
    if words and len(words & content_words(evidence)) / len(words) < min_overlap:
        problems.append(f"the cited facts {', '.join(ids)} do not support this text")
    return problems


def corroborating(text: str, ids: list[str], index: dict[str, CitedFact]) -> list[str]:
    """For each outlet a statement does not cite, its first verified fact that states the statement alone.

    A small model cites the facts it read first, so "1 outlet" under a statement that three outlets
    report would mislead an editor weighing it. A fact counts only if its own sentences carry every
    number and date of the statement and enough of its words: the same test the cited ids passed.
    """
    cited = {index[i].extraction.article.outlet for i in ids}
    found: dict[str, str] = {}
    for fact_id, entry in index.items():
        outlet = entry.extraction.article.outlet
        if outlet in cited or outlet in found:
            continue
        if not _text_problems(text, [fact_id], index, min_overlap=MIN_STATEMENT_OVERLAP):
            found[outlet] = fact_id
    return list(found.values())


def draft_problems(
    draft: DigestDraft, index: dict[str, CitedFact]
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Problems per statement and per disagreement (by position in the draft)."""
    statements = {}
    for i, st in enumerate(draft.statements):
        if problems := text_problems(st.text, st.facts, index, min_overlap=MIN_STATEMENT_OVERLAP):
            statements[i] = [f'statement {i + 1} ("{st.text[:80]}"): {p}' for p in problems]
    disagreements = {}
    for i, dis in enumerate(draft.disagreements):
        problems = []
        for j, pos in enumerate(dis.positions):
            found = text_problems(pos.says, pos.facts, index, min_overlap=MIN_STATEMENT_OVERLAP)
            problems += [f"position {j + 1}: {p}" for p in found]
        if not problems and _same_report(dis.positions):
            problems.append("the sides report the same thing; list only points on which articles differ")
        if not problems:
            # The topic is published too: it must be about what the sides' sentences say.
            cited = [f for pos in dis.positions for f in pos.facts]
            problems += [
                f"topic: {p}" for p in text_problems(dis.topic, cited, index, min_overlap=MIN_STATEMENT_OVERLAP)
            ]
        if not problems:
            sides = [{index[f].extraction.article.outlet for f in pos.facts} for pos in dis.positions]
            if len(set().union(*sides)) < 2 or any(a == b for k, a in enumerate(sides) for b in sides[k + 1 :]):
                problems.append("each side must cite facts from a different outlet than the other sides")
        if problems:
            disagreements[i] = [f'disagreement {i + 1} ("{dis.topic[:60]}"): {p}' for p in problems]
    return statements, disagreements


def _same_report(positions: list[PositionDraft]) -> bool:
    """True when every pair of sides says the same thing in nearly the same words."""
    for k, first in enumerate(positions):
        for second in positions[k + 1 :]:
            a, b = content_words(first.says), content_words(second.says)
            na, nb = numbers_in(first.says) | months_in(first.says), numbers_in(second.says) | months_in(second.says)
            similar = len(a & b) / max(1, len(a | b)) >= SAME_SIDE_OVERLAP
            if not (similar and (na <= nb or nb <= na)):
                return False
    return True


def stating(text: str, ids: list[str], index: dict[str, CitedFact]) -> list[str]:
    """The cited ids that carry part of ``text`` themselves: a number of it, or some of its words.

    A small model pads a statement with the ids of the facts next to it; published, each would add a
    footnote that says something else and an outlet that does not report it. Unknown ids stay, so
    they are reported as such; if no id carries anything, all stay and the statement fails its check.
    """
    words, numbers = content_words(text), numbers_in(text)

    def carries(fact_id: str) -> bool:
        entry = index.get(fact_id)
        if entry is None:
            return True
        evidence = _evidence([fact_id], index)
        if numbers & numbers_in(evidence):
            return True
        return bool(words) and len(words & content_words(evidence)) / len(words) >= MIN_SENTENCE_SHARE

    kept = [i for i in ids if carries(i)]
    return kept or ids


def without_padding(draft: DigestDraft, index: dict[str, CitedFact]) -> DigestDraft:
    """The draft with every statement and side citing only the facts that state part of it."""
    return draft.model_copy(
        update={
            "statements": [s.model_copy(update={"facts": stating(s.text, s.facts, index)}) for s in draft.statements],
            "disagreements": [
                d.model_copy(
                    update={
                        "positions": [
                            p.model_copy(update={"facts": stating(p.says, p.facts, index)}) for p in d.positions
                        ]
                    }
                )
                for d in draft.disagreements
            ],
        }
    )


def _parse(data: object) -> tuple[DigestDraft | None, list[str]]:
    try:
        draft = DigestDraft.model_validate(data)
    except ValidationError as exc:
        return None, validation_lines(exc)
    return _cleaned(draft), []


def _cleaned(draft: DigestDraft) -> DigestDraft:
    """Every model-written string as a reader will see it, before it is checked."""
    return draft.model_copy(
        update={
            "headline": clean_inline(draft.headline),
            "statements": [s.model_copy(update={"text": clean_inline(s.text)}) for s in draft.statements],
            "disagreements": [
                d.model_copy(
                    update={
                        "topic": clean_inline(d.topic),
                        "positions": [p.model_copy(update={"says": clean_inline(p.says)}) for p in d.positions],
                    }
                )
                for d in draft.disagreements
            ],
        }
    )


def prompt_articles(extractions: list[Extraction]) -> list[dict[str, object]]:
    return [
        {
            "n": n,
            "outlet": e.article.outlet,
            "title": e.article.title,
            "facts": e.facts,
            "published": e.article.published_at.date().isoformat() if e.article.published_at else None,
        }
        for n, e in enumerate(extractions, 1)
    ]


async def build_digest(
    extractions: list[Extraction],
    prompt: Prompt,
    llm: Completer,
    *,
    story_id: str | None = None,
    language: str = "en",
    other_sources: list[Source] | None = None,
) -> Digest:
    """One digest from the articles that produced facts; ``other_sources`` lists failed or duplicate ones."""
    usable = [e for e in extractions if e.facts]
    if not usable:
        raise InputError("no article of this story produced a verified fact; nothing to digest")
    index = fact_index(usable)
    prov = PromptProvenance(prompt=prompt.ref, prompt_hash=prompt.sha256, model=llm.model, mode=llm.mode)
    wanted = statement_count(len(index))
    messages = prompt.messages(
        articles=prompt_articles(usable),
        language=language,
        min_statements=min(3, len(index)),
        max_statements=8,
        n_statements=wanted,
    )
    answer = await ask_model(llm, prompt, messages, prov)
    draft, whole = _parse(answer.data) if not answer.problem else (None, [answer.problem])
    draft = without_padding(draft, index) if draft else None
    bad_st, bad_dis = draft_problems(draft, index) if draft else ({}, {})
    # Under half of what was asked: a small model often stops after one statement and leaves the
    # story's figures out. One or two short of the count is not worth another call.
    first = draft if not (whole or bad_st or bad_dis) else None
    short = first is not None and 2 * len(first.statements) < wanted
    if first is not None and short:
        cited = {f for st in first.statements for f in st.facts}
        whole = [f"the digest has {len(first.statements)} statement(s) but {wanted} were asked for; add statements "
                 f"for facts not cited yet: {', '.join(f for f in index if f not in cited)}"]
    if whole or bad_st or bad_dis:
        prov.reasks += 1
        metrics.REASKS.labels(prompt=prompt.ref).inc()
        problems = whole + [p for lines in (*bad_st.values(), *bad_dis.values()) for p in lines]
        second = await ask_model(
            llm,
            prompt,
            reask_messages(messages, answer, problems, "Answer again with the whole corrected JSON object."),
            prov,
        )
        draft2, whole2 = _parse(second.data) if not second.problem else (None, [second.problem])
        draft2 = without_padding(draft2, index) if draft2 else None
        if draft2 is not None:
            bad_st2, bad_dis2 = draft_problems(draft2, index)
            # Asked only for more statements: keep the first answer unless the second publishes more.
            if first is None or not short or len(draft2.statements) - len(bad_st2) > len(first.statements):
                draft, bad_st, bad_dis = draft2, bad_st2, bad_dis2
        elif draft is None:
            prov.error = "no usable digest after a re-ask: " + "; ".join(whole2)[:300]
            raise LLMOutputError(prov.error)
    assert draft is not None
    prov.rejected = len(bad_st) + len(bad_dis)
    prov.rejections = [
        Rejection(item=(draft.statements[i].text if i < len(draft.statements) else ""), reasons=r)
        for i, r in bad_st.items()
    ]
    prov.rejections += [Rejection(item=draft.disagreements[i].topic, reasons=r) for i, r in bad_dis.items()]
    metrics.REJECTED.labels(prompt=prompt.ref).inc(prov.rejected)
    kept = [st for i, st in enumerate(draft.statements) if i not in bad_st]
    statements = [_statement(st.text, st.facts + corroborating(st.text, st.facts, index), index) for st in kept]
    if not statements:
        raise LLMOutputError("the model cited no verified fact in any statement, so no digest can be published")
    disagreements = (
        []
        if len({e.article.outlet for e in usable}) < 2
        else [
            Disagreement(
                topic=d.topic,
                positions=[
                    Position(
                        says=p.says,
                        outlets=sorted({index[f].extraction.article.outlet for f in p.facts}),
                        citations=citations_for(p.facts, index),
                    )
                    for p in d.positions
                ],
            )
            for i, d in enumerate(draft.disagreements)
            if i not in bad_dis
        ]
    )
    # The headline carries no citation of its own, so it may say only what the published statements'
    # sentences say; a headline true of some unpublished fact ("Meta acquires Scale AI for $14.3
    # billion", of a 49% stake) would be the digest's least checked and most read line.
    published = list(dict.fromkeys(f for st in kept for f in st.facts))
    headline = draft.headline
    if _text_problems(headline, published, index, min_overlap=MIN_STATEMENT_OVERLAP):
        headline = statements[0].text
    sources = [
        _source(e, status="used" if (e.article.language or language)[:2] == language[:2] else "other_language",
                facts=len(e.facts))
        for e in usable
    ]
    sources += [
        _source(e, status="failed", error="no verified fact" if not e.provenance else _first_error(e))
        for e in extractions
        if not e.facts
    ]
    return Digest(
        story_id=story_id,
        headline=headline,
        statements=statements,
        disagreements=disagreements,
        sentiment=aggregate(usable),
        sources=sources + list(other_sources or []),
        language=language,
        provenance=prov,
        created_at=datetime.now(UTC),
    )


def _statement(text: str, ids: list[str], index: dict[str, CitedFact]) -> Statement:
    citations = citations_for(ids, index)
    return Statement(text=text, citations=citations, outlets=len({c.outlet for c in citations}))


def _source(extraction: Extraction, **outcome: Any) -> Source:
    a = extraction.article
    return Source(article_id=a.article_id, outlet=a.outlet, title=a.title, url=a.url, published_at=a.published_at,
                  language=a.language, **outcome)


def _first_error(extraction: Extraction) -> str:
    errors = [p.error for p in extraction.provenance.values() if p.error]
    return errors[0] if errors else "no verified fact"
