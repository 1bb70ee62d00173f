"""extract: the key facts and sentiment of one article, verified, with one re-ask.

The model is injected (anything with ``complete(prompt, messages)``), so this module holds
the rules, not the I/O: ask, validate each item against its schema and the article's
sentences, re-ask once listing every problem, then keep what passes and count what doesn't.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any, Protocol

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
    Sentiment,
    SentimentDraft,
)
from service import metrics
from service.errors import LLMOutputError, LLMTruncated
from service.llm import Completion
from service.prompts import Prompt
from service.text import clean_inline
from service.verify import entity_problems, fact_problems, quotes, repeats, sentiment_problems

MAX_FACTS = 8
MAX_ENTITIES = 5


def target_facts(article: PreparedArticle) -> int:
    """How many facts to ask for: small models follow an exact count better than a range."""
    return max(3, min(6, len(article.sentences) // 8))


class Completer(Protocol):
    """What a stage needs of a model client (``service.llm.LLMClient``, or a test double)."""

    @property
    def model(self) -> str: ...

    @property
    def mode(self) -> str: ...

    async def complete(self, prompt: Prompt, messages: list[dict[str, str]]) -> Completion: ...


@dataclass
class Answer:
    data: dict[str, Any] | None
    content: str
    problem: str | None  # why the whole answer is unusable, if it is


def article_ref(article: PreparedArticle, article_id: str | None = None) -> ArticleRef:
    return ArticleRef(
        article_id=article_id or article.cms_id,
        outlet=article.outlet,
        title=article.title,
        url=article.url,
        published_at=article.published_at,
        language=article.language,
        content_hash=article.content_hash,
        sentence_count=len(article.sentences),
    )


def prompt_context(article: PreparedArticle) -> dict[str, Any]:
    """What both article prompts see; identical leading text lets the server reuse its prefix cache."""
    published = article.published_at.date().isoformat() if article.published_at else None
    return {
        "outlet": article.outlet,
        "title": article.title,
        "published": published,
        "sentences": article.sentences,
        "max_facts": MAX_FACTS,
        "target_facts": target_facts(article),
        "max_entities": MAX_ENTITIES,
    }


def validation_lines(exc: ValidationError, where: str = "") -> list[str]:
    """One line per schema error, as the re-ask shows them."""
    lines = []
    for err in exc.errors(include_url=False, include_context=False):
        loc = ".".join(str(part) for part in err["loc"])
        lines.append(f"{where}{'.' if where and loc else ''}{loc}: {err['msg']}")
    return lines


async def ask_model(llm: Completer, prompt: Prompt, messages: list[dict[str, str]], prov: PromptProvenance) -> Answer:
    """One call; an unusable answer is returned as a problem, an endpoint failure propagates."""
    try:
        completion = await llm.complete(prompt, messages)
    except LLMOutputError as exc:
        prov.calls.append(exc.usage)
        hint = " Give fewer, shorter items." if isinstance(exc, LLMTruncated) else ""
        return Answer(None, exc.content or "", f"{exc.detail}.{hint}")
    prov.calls.append(completion.usage)
    return Answer(completion.data, completion.content, None)


def reask_messages(
    messages: list[dict[str, str]], answer: Answer, problems: list[str], instruction: str
) -> list[dict[str, str]]:
    listing = "\n".join(f"- {p}" for p in problems)
    text = f"Your answer has these problems:\n{listing}\n{instruction}\nFix the errors and try again."
    return [*messages, {"role": "assistant", "content": answer.content}, {"role": "user", "content": text}]


def _items(answer: Answer, key: str) -> tuple[list[Any], str | None]:
    if answer.problem:
        return [], answer.problem
    value = (answer.data or {}).get(key)
    if not isinstance(value, list):
        return [], f'the answer must be a JSON object with a "{key}" list'
    return value, None


def _check_facts(items: list[Any], article: PreparedArticle) -> tuple[list[FactDraft], list[tuple[str, list[str]]]]:
    good: list[FactDraft] = []
    bad: list[tuple[str, list[str]]] = []
    for i, item in enumerate(items, 1):
        label = f"fact {i}"
        try:
            fact = FactDraft.model_validate(item)
            fact = fact.model_copy(update={"claim": clean_inline(fact.claim)})
        except ValidationError as exc:
            bad.append((str(item)[:200], validation_lines(exc, label)))
            continue
        problems = fact_problems(fact, article)
        if problems:
            bad.append((fact.claim, [f'{label} ("{fact.claim}"): {p}' for p in problems]))
        else:
            good.append(fact)
    return good, bad


async def extract_facts(
    article: PreparedArticle, prompt: Prompt, llm: Completer
) -> tuple[list[Fact], PromptProvenance]:
    prov = PromptProvenance(prompt=prompt.ref, prompt_hash=prompt.sha256, model=llm.model, mode=llm.mode)
    messages = prompt.messages(**prompt_context(article))
    answer = await ask_model(llm, prompt, messages, prov)
    items, whole = _items(answer, "facts")
    good, bad = _check_facts(items, article)
    if whole or bad:
        prov.reasks += 1
        metrics.REASKS.labels(prompt=prompt.ref).inc()
        if whole:
            problems, instruction = [whole], 'Answer again with the whole JSON object: {"facts": [...]}.'
        else:
            problems = [line for _, lines in bad for line in lines]
            instruction = (
                'Return {"facts": [...]} with corrected versions of only the facts listed above; '
                "leave out a fact that no sentence states."
            )
        second = await ask_model(llm, prompt, reask_messages(messages, answer, problems, instruction), prov)
        items2, whole2 = _items(second, "facts")
        good2, bad2 = _check_facts(items2, article)
        if whole and whole2:
            prov.error = f"no usable answer after a re-ask: {whole2}"
        good += good2
        # Items that failed and were not repaired are dropped; the count is what an editor audits.
        prov.rejected = len(bad2) if whole else max(len(bad2), len(bad) - len(good2))
        prov.rejections = [Rejection(item=item, reasons=reasons) for item, reasons in (bad2 + bad)][: prov.rejected]
        metrics.REJECTED.labels(prompt=prompt.ref).inc(prov.rejected)
    facts: list[Fact] = []
    kept: list[tuple[str, list[int]]] = []
    for draft in good:
        if repeats(draft.claim, draft.sentences, kept) or len(facts) == MAX_FACTS:
            continue
        kept.append((draft.claim, draft.sentences))
        facts.append(
            Fact(id=f"F{len(facts) + 1}", claim=draft.claim.strip(), citations=quotes(draft.sentences, article))
        )
    return facts, prov


def _check_sentiment(
    answer: Answer, article: PreparedArticle
) -> tuple[SentimentDraft | None, list[str], list[EntitySentimentDraft], list[tuple[str, list[str]]]]:
    """(draft if its overall part is usable, overall problems, good entities, bad entities)."""
    if answer.problem:
        return None, [answer.problem], [], []
    try:
        draft = SentimentDraft.model_validate(answer.data)
        draft = draft.model_copy(
            update={"entities": [e.model_copy(update={"entity": clean_inline(e.entity)}) for e in draft.entities]}
        )
    except ValidationError as exc:
        return None, validation_lines(exc), [], []
    overall = sentiment_problems(draft, article)
    good, bad = [], []
    for entity in draft.entities:
        problems = entity_problems(entity, article)
        if problems:
            bad.append((entity.entity, [f"entity {entity.entity!r}: {p}" for p in problems]))
        else:
            good.append(entity)
    return (None if overall else draft), overall, good, bad


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
    article: PreparedArticle, prompt: Prompt, llm: Completer
) -> tuple[Sentiment | None, PromptProvenance]:
    prov = PromptProvenance(prompt=prompt.ref, prompt_hash=prompt.sha256, model=llm.model, mode=llm.mode)
    messages = prompt.messages(**prompt_context(article))
    answer = await ask_model(llm, prompt, messages, prov)
    draft, overall, good, bad = _check_sentiment(answer, article)
    if draft is None or bad:
        prov.reasks += 1
        metrics.REASKS.labels(prompt=prompt.ref).inc()
        problems = overall + [line for _, lines in bad for line in lines]
        second = await ask_model(
            llm,
            prompt,
            reask_messages(messages, answer, problems, "Answer again with the whole corrected JSON object."),
            prov,
        )
        draft2, overall2, good2, bad2 = _check_sentiment(second, article)
        if draft2 is not None:
            draft, good, bad = draft2, good2, bad2
        elif draft is None:
            prov.error = "no usable sentiment after a re-ask: " + "; ".join(overall2)[:300]
            prov.rejected = 1
            prov.rejections = [Rejection(item="overall sentiment", reasons=overall2)]
        prov.rejected += len(bad)
        prov.rejections += [Rejection(item=item, reasons=reasons) for item, reasons in bad]
        metrics.REJECTED.labels(prompt=prompt.ref).inc(prov.rejected)
    return (_sentiment(draft, good, article) if draft else None), prov


async def extract_article(
    article: PreparedArticle,
    prompts: dict[str, Prompt],
    llm: Completer,
    *,
    article_id: str | None = None,
    sequential: bool = False,
) -> Extraction:
    """Both prompts of one article. ``sequential`` sends them back to back, so a single-slot local
    server reuses the shared article prefix; otherwise they run concurrently."""
    facts_call = extract_facts(article, prompts["key_facts"], llm)
    # Made where it is awaited: made up front, it was never awaited when key facts raised (RuntimeWarning).
    sentiment_call = functools.partial(extract_sentiment, article, prompts["sentiment"], llm)
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
        article=article_ref(article, article_id),
        facts=facts,
        sentiment=sentiment,
        provenance={"key_facts": facts_prov, "sentiment": sentiment_prov},
    )
