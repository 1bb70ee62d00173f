"""extract: the key facts and sentiment of one article, verified, repaired where the article allows.

The model is injected (``service.llm.port.Completer``), so this module holds the rules, not the
I/O: ask, validate each item against its schema and the article's sentences, move a citation the
article itself corrects (``verify.repair``), re-ask once for what cannot be repaired, then keep
what passes and count what does not. An article longer than the model can read at once is asked
about in overlapping sections of its sentences; citations stay the article's own numbers.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from schemas import (
    ArticleRef,
    EntitySentiment,
    EntitySentimentDraft,
    Extraction,
    Fact,
    FactDraft,
    PreparedArticle,
    PromptProvenance,
    Rejection,
    Sentence,
    Sentiment,
    SentimentDraft,
)
from service.errors import validation_lines
from service.llm.port import Completer
from service.pipeline.reask import Answer, Checked, ask_checked
from service.pipeline.text import clean_inline
from service.pipeline.verify import entity_problems, fact_problems, quotes, repair, repeats, sentiment_problems
from service.prompts import Prompt

MAX_FACTS = 8
MAX_ENTITIES = 5
#: Sentences two neighbouring sections share, so a fact told across a section boundary is seen whole.
SECTION_OVERLAP = 3


def target_facts(sentences: int) -> int:
    """How many facts to ask for: small models follow an exact count better than a range, and a short
    article still holds five things an editor wants (what, who leads now, the figures, who stays, who follows)."""
    return max(5, min(MAX_FACTS, sentences // 5))


def sections(article: PreparedArticle, max_chars: int | None) -> list[tuple[Sentence, ...]]:
    """The article's sentences in runs of at most ``max_chars`` characters, overlapping a little.

    A sentence longer than ``max_chars`` is a run of its own; it is never cut.
    """
    sentences = article.sentences
    cost = [len(s.text) + 6 for s in sentences]  # as numbered in the prompt: "[12] ...\n"
    if max_chars is None or sum(cost) <= max_chars:
        return [sentences]
    runs: list[tuple[Sentence, ...]] = []
    start = 0
    while True:
        size, end = 0, start
        while end < len(sentences) and (end == start or size + cost[end] <= max_chars):
            size += cost[end]
            end += 1
        runs.append(sentences[start:end])
        if end == len(sentences):
            return runs
        # Up to SECTION_OVERLAP sentences shared with the next run, fewer when the next sentence does not
        # fit beside them: every run shows a sentence the one before did not (else it is a wasted call).
        start = max(start + 1, end - SECTION_OVERLAP)
        while start < end and sum(cost[start : end + 1]) > max_chars:
            start += 1


def prompt_context(article: PreparedArticle, sentences: tuple[Sentence, ...] | None = None) -> dict[str, Any]:
    """What both article prompts see; identical leading text lets the server reuse its prefix cache."""
    shown = article.sentences if sentences is None else sentences
    published = article.published_at.date().isoformat() if article.published_at else None
    return {
        "outlet": article.outlet,
        "title": article.title,
        "published": published,
        "sentences": shown,
        "max_facts": MAX_FACTS,
        "target_facts": target_facts(len(shown)),
        "max_entities": MAX_ENTITIES,
    }


def _items(answer: Answer, key: str) -> tuple[list[Any], str | None]:
    if answer.problem:
        return [], answer.problem
    value = (answer.data or {}).get(key)
    if not isinstance(value, list):
        return [], f'the answer must be a JSON object with a "{key}" list'
    return value, None


@dataclass
class _FactRound:
    good: list[tuple[FactDraft, list[int] | None]] = field(default_factory=list)  # (draft, model's citation if moved)
    bad: list[tuple[str, list[str]]] = field(default_factory=list)
    whole: str | None = None


def _check_facts(answer: Answer, article: PreparedArticle) -> Checked[_FactRound]:
    items, whole = _items(answer, "facts")
    found = _FactRound(whole=whole)
    for i, item in enumerate(items, 1):
        label = f"fact {i}"
        try:
            fact = FactDraft.model_validate(item)
            fact = fact.model_copy(update={"claim": clean_inline(fact.claim)})
        except ValidationError as exc:
            found.bad.append((str(item)[:200], validation_lines(exc, label)))
            continue
        problems = fact_problems(fact, article)
        if not problems:
            found.good.append((fact, None))
        elif (moved := repair(fact.claim, fact.sentences, article)) is not None:
            found.good.append((fact.model_copy(update={"sentences": moved}), fact.sentences))
        else:
            found.bad.append((fact.claim, [f'{label} ("{fact.claim}"): {p}' for p in problems]))
    if whole:
        return Checked(found, [whole], 'Answer again with the whole JSON object: {"facts": [...]}.')
    return Checked(
        found,
        [line for _, lines in found.bad for line in lines],
        'Return {"facts": [...]} with corrected versions of only the facts listed above; '
        "leave out a fact that no sentence states.",
    )


async def _facts_of_section(
    article: PreparedArticle, shown: tuple[Sentence, ...], prompt: Prompt, llm: Completer, prov: PromptProvenance
) -> list[tuple[FactDraft, list[int] | None]]:
    section = PromptProvenance(prompt=prov.prompt, prompt_hash=prov.prompt_hash, model=prov.model, mode=prov.mode)
    messages = prompt.messages(**prompt_context(article, shown))
    rounds = await ask_checked(llm, prompt, messages, section, lambda answer: _check_facts(answer, article))
    good = [g for r in rounds for g in r.value.good]
    first, last = rounds[0].value, rounds[-1].value
    if len(rounds) > 1:
        if first.whole and last.whole:
            section.error = f"no usable answer after a re-ask: {last.whole}"
        # Items that failed and were not made good are dropped; the count is what an editor audits.
        section.rejected = len(last.bad) if first.whole else max(len(last.bad), len(first.bad) - len(last.good))
        section.rejections = [Rejection(item=item, reasons=reasons) for item, reasons in (last.bad + first.bad)][
            : section.rejected
        ]
    prov.calls += section.calls
    prov.reasks += section.reasks
    prov.rejected += section.rejected
    prov.rejections += section.rejections
    prov.error = prov.error or section.error
    return good


async def extract_facts(
    article: PreparedArticle, prompt: Prompt, llm: Completer, *, section_chars: int | None = None
) -> tuple[list[Fact], PromptProvenance]:
    prov = PromptProvenance(prompt=prompt.ref, prompt_hash=prompt.sha256, model=llm.model, mode=llm.mode)
    runs = sections(article, section_chars)
    drafts: list[tuple[FactDraft, list[int] | None]] = []
    for shown in runs:  # in order: a single-slot server then reuses each section's prefix for nothing else
        drafts += await _facts_of_section(article, shown, prompt, llm, prov)
    if len(runs) > 1 and prov.error and drafts:
        prov.error = None  # one section failing does not make the article's other facts unusable
    cap = MAX_FACTS * len(runs)
    facts: list[Fact] = []
    kept: list[tuple[str, list[int]]] = []
    for draft, cited in drafts:
        if repeats(draft.claim, draft.sentences, kept) or len(facts) == cap:
            continue
        kept.append((draft.claim, draft.sentences))
        prov.repaired += cited is not None
        facts.append(Fact(id=f"F{len(facts) + 1}", claim=draft.claim.strip(),
                          citations=quotes(draft.sentences, article), repaired_from=cited))
    return facts, prov


@dataclass
class _SentimentRound:
    draft: SentimentDraft | None  # None when its overall part is unusable
    overall: list[str]
    good: list[EntitySentimentDraft]
    bad: list[tuple[str, list[str]]]


def _check_sentiment(answer: Answer, article: PreparedArticle) -> Checked[_SentimentRound]:
    if answer.problem:
        return Checked(_SentimentRound(None, [answer.problem], [], []), [answer.problem])
    try:
        draft = SentimentDraft.model_validate(answer.data)
        draft = draft.model_copy(
            update={"entities": [e.model_copy(update={"entity": clean_inline(e.entity)}) for e in draft.entities]}
        )
    except ValidationError as exc:
        lines = validation_lines(exc)
        return Checked(_SentimentRound(None, lines, [], []), lines)
    overall = sentiment_problems(draft, article)
    good, bad = [], []
    for entity in draft.entities:
        problems = entity_problems(entity, article)
        if problems:
            bad.append((entity.entity, [f"entity {entity.entity!r}: {p}" for p in problems]))
        else:
            good.append(entity)
    found = _SentimentRound(None if overall else draft, overall, good, bad)
    return Checked(found, overall + [line for _, lines in bad for line in lines])


def _sentiment(draft: SentimentDraft, entities: list[EntitySentimentDraft], article: PreparedArticle) -> Sentiment:
    return Sentiment(
        overall=draft.overall,
        score=draft.score,
        citations=quotes(draft.sentences, article),
        entities=[
            EntitySentiment(entity=e.entity, label=e.label, score=e.score, citations=quotes(e.sentences, article))
            for e in entities
        ],
    )


async def extract_sentiment(
    article: PreparedArticle, prompt: Prompt, llm: Completer, *, section_chars: int | None = None
) -> tuple[Sentiment | None, PromptProvenance]:
    """The article's tone, judged on its first section: the lead sets it."""
    prov = PromptProvenance(prompt=prompt.ref, prompt_hash=prompt.sha256, model=llm.model, mode=llm.mode)
    messages = prompt.messages(**prompt_context(article, sections(article, section_chars)[0]))
    rounds = await ask_checked(llm, prompt, messages, prov, lambda answer: _check_sentiment(answer, article))
    chosen = next((r.value for r in reversed(rounds) if r.value.draft is not None), None)
    if len(rounds) > 1:
        if chosen is None:
            last = rounds[-1].value
            prov.error = "no usable sentiment after a re-ask: " + "; ".join(last.overall)[:300]
            # The overall judgement and the entities that failed their own checks, each counted.
            prov.rejected = 1 + len(last.bad)
            prov.rejections = [Rejection(item="overall sentiment", reasons=last.overall)]
            prov.rejections += [Rejection(item=item, reasons=reasons) for item, reasons in last.bad]
        else:
            prov.rejected += len(chosen.bad)
            prov.rejections += [Rejection(item=item, reasons=reasons) for item, reasons in chosen.bad]
    if chosen is None or chosen.draft is None:
        return None, prov
    return _sentiment(chosen.draft, chosen.good, article), prov


async def extract_article(
    article: PreparedArticle,
    prompts: dict[str, Prompt],
    llm: Completer,
    *,
    article_id: str | None = None,
    sequential: bool = False,
    section_chars: int | None = None,
) -> Extraction:
    """Both prompts of one article. ``sequential`` sends them back to back, so a single-slot local
    server reuses the shared article prefix; otherwise they run concurrently."""
    facts_call = extract_facts(article, prompts["key_facts"], llm, section_chars=section_chars)
    # Made where it is awaited: made up front, it was never awaited when key facts raised (RuntimeWarning).
    sentiment_call = functools.partial(extract_sentiment, article, prompts["sentiment"], llm,
                                       section_chars=section_chars)
    if sequential:
        facts, facts_prov = await facts_call
        sentiment, sentiment_prov = await sentiment_call()
    else:
        # A TaskGroup cancels the other prompt when one fails, so no model call outlives a failed attempt.
        try:
            async with asyncio.TaskGroup() as group:
                facts_task = group.create_task(facts_call)
                sentiment_task = group.create_task(sentiment_call())
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        (facts, facts_prov), (sentiment, sentiment_prov) = facts_task.result(), sentiment_task.result()
    return Extraction(
        article=ArticleRef.of(article, article_id),
        facts=facts,
        sentiment=sentiment,
        provenance={"key_facts": facts_prov, "sentiment": sentiment_prov},
    )
