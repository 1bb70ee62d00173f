"""A story end to end: its articles analysed, then one digest. The one orchestration, for the CLI
and the job functions alike.

Articles with the same text (same content hash) are analysed once and listed as duplicates, so
two copies of one wire story never count as two outlets. An article the model fails on becomes a
failed source instead of stopping the story. On the embedded single-slot model an article's two
prompts run back to back and articles one after another, so the server's prefix cache is reused;
on a hosted endpoint everything runs concurrently, bounded by the client's semaphore.

Persistence is a port (:class:`StoryStore`): the job functions pass one that answers from and
fills the extraction and digest caches; the CLI passes none and every step runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from schemas import ArticleIn, Digest, Extraction, PreparedArticle, Source
from service.errors import InputError, LLMError
from service.llm.port import Completer
from service.pipeline.digest import build_digest
from service.pipeline.extract import extract_article
from service.pipeline.text import prepare
from service.prompts import Prompt

log = structlog.get_logger(__name__)

Progress = Callable[[str, PreparedArticle | None], None]


@dataclass(frozen=True)
class StoryArticle:
    """A prepared article and the id it is cited by (the service's, or the CMS's)."""

    prepared: PreparedArticle
    article_id: str | None = None


class StoryStore(Protocol):
    """What a caller that persists lends the story: cached answers instead of model calls."""

    async def analysis(self, article: StoryArticle, run: Callable[[], Awaitable[Extraction]]) -> Extraction:
        """The stored analysis of ``article``, or ``run()``'s, stored."""
        ...

    async def digest(self, extractions: list[Extraction], failed: list[Source],
                     run: Callable[[], Awaitable[Digest]]) -> Digest:
        """The stored digest of exactly these analyses, or ``run()``'s."""
        ...


@dataclass(frozen=True)
class StoryOptions:
    sequential: bool = False
    section_chars: int | None = None
    language: str = "en"
    story_id: str | None = None


def prepare_all(articles: list[ArticleIn], *, max_chars: int) -> tuple[list[StoryArticle], list[Source]]:
    """Each article prepared, or a failed source saying why."""
    ready, failed = [], []
    for article in articles:
        try:
            ready.append(StoryArticle(prepare(article, max_chars=max_chars), article.id))
        except InputError as exc:
            failed.append(Source.of(article, status="failed", error=exc.detail))
    return ready, failed


def in_story_order(articles: list[StoryArticle]) -> list[StoryArticle]:
    """Oldest publication first, undated ones last, otherwise as given: the order the store lists a
    story in, so the same articles make the same digest whether the CLI or the API was handed them."""
    return sorted(articles, key=lambda a: (a.prepared.published_at is None,
                                           a.prepared.published_at.timestamp() if a.prepared.published_at else 0))


async def analyse_story(
    articles: list[StoryArticle], prompts: dict[str, Prompt], llm: Completer, options: StoryOptions, *,
    store: StoryStore | None = None, on_progress: Progress | None = None,
) -> tuple[list[Extraction], list[Source], LLMError | None]:
    """(analyses, duplicate and failed sources, the last model failure)."""
    others: list[Source] = []
    unique: list[StoryArticle] = []
    seen: dict[str, StoryArticle] = {}
    for item in articles:
        first = seen.setdefault(item.prepared.content_hash, item)
        if first is item:
            unique.append(item)
        else:
            others.append(Source.of(item.prepared, article_id=item.article_id, status="duplicate",
                                    error=f"same text as {first.prepared.outlet}"))
    failure: LLMError | None = None

    async def one(item: StoryArticle) -> Extraction | None:
        nonlocal failure

        def run() -> Awaitable[Extraction]:
            return extract_article(item.prepared, {n: prompts[n] for n in ("key_facts", "sentiment")}, llm,
                                   article_id=item.article_id, sequential=options.sequential,
                                   section_chars=options.section_chars)

        try:
            extraction = await (store.analysis(item, run) if store else run())
        except LLMError as exc:
            log.warning("article.failed", outlet=item.prepared.outlet, error=exc.detail)
            others.append(Source.of(item.prepared, article_id=item.article_id, status="failed", error=exc.detail))
            failure = exc
            return None
        if on_progress:
            on_progress("analysed", item.prepared)
        return extraction

    if options.sequential:
        results = [await one(item) for item in unique]
    else:
        results = list(await asyncio.gather(*(one(item) for item in unique)))
    return [r for r in results if r is not None], others, failure


async def digest_story(
    articles: list[StoryArticle], prompts: dict[str, Prompt], llm: Completer, options: StoryOptions, *,
    failed: list[Source] | None = None, store: StoryStore | None = None, on_progress: Progress | None = None,
) -> Digest:
    """Analyse every article, then write the digest; ``failed`` lists articles that could not be prepared."""
    if not articles:
        raise InputError("a digest needs at least one article")
    articles = in_story_order(articles)
    extractions, others, failure = await analyse_story(articles, prompts, llm, options, store=store,
                                                       on_progress=on_progress)
    if failure is not None and not extractions:
        raise failure  # the model's fault, not the caller's: workers retry it
    if on_progress:
        on_progress("digesting", None)
    others = [*(failed or []), *others]

    def run() -> Awaitable[Digest]:
        return build_digest(extractions, prompts["digest"], llm, articles=[a.prepared for a in articles],
                            story_id=options.story_id, language=options.language, other_sources=others)

    return await (store.digest(extractions, others, run) if store else run())
