"""A story end to end: prepare every article, analyse each, then one digest (orchestration only).

Articles that fail to prepare or to analyse become failed sources instead of stopping the
story; identical texts (same content hash) are analysed once. On the embedded single-slot
model, an article's two prompts run back to back and articles one after another, so the
server's prefix cache is reused; on a hosted endpoint everything runs concurrently, bounded by
the LLM client's semaphore.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from schemas import ArticleIn, Digest, Extraction, PreparedArticle, Source
from service.digest import build_digest
from service.errors import InputError, LLMError
from service.extract import Completer, extract_article
from service.prompts import Prompt
from service.text import prepare

log = structlog.get_logger(__name__)

#: Cache lookup and store, injected by callers that persist (the API); the CLI passes none.
Analyse = Callable[[PreparedArticle], Awaitable[Extraction]]
Progress = Callable[[str, PreparedArticle | None], None]


@dataclass
class StoryAnalysis:
    extractions: list[Extraction] = field(default_factory=list)
    other_sources: list[Source] = field(default_factory=list)
    #: The last model failure, re-raised when no article could be analysed at all.
    llm_error: LLMError | None = None


def _failed(article: ArticleIn | PreparedArticle, status: str, error: str) -> Source:
    return Source(
        article_id=getattr(article, "id", None) or getattr(article, "cms_id", None),
        outlet=article.outlet,
        title=article.title,
        url=article.url,
        published_at=article.published_at,
        status=status,
        error=error,
    )


async def analyse_story(
    articles: list[ArticleIn],
    prompts: dict[str, Prompt],
    llm: Completer,
    *,
    max_chars: int,
    sequential: bool,
    on_progress: Progress | None = None,
) -> StoryAnalysis:
    story = StoryAnalysis()
    prepared: list[PreparedArticle] = []
    seen: dict[str, PreparedArticle] = {}
    for article in articles:
        try:
            item = prepare(article, max_chars=max_chars)
        except InputError as exc:
            story.other_sources.append(_failed(article, "failed", exc.detail))
            continue
        if item.content_hash in seen:
            story.other_sources.append(_failed(item, "duplicate", f"same text as {seen[item.content_hash].outlet}"))
            continue
        seen[item.content_hash] = item
        prepared.append(item)

    async def one(item: PreparedArticle) -> Extraction | None:
        try:
            extraction = await extract_article(item, prompts, llm, sequential=sequential)
        except LLMError as exc:
            log.warning("article.failed", outlet=item.outlet, error=exc.detail)
            story.other_sources.append(_failed(item, "failed", exc.detail))
            story.llm_error = exc
            return None
        if on_progress:
            on_progress("analysed", item)
        return extraction

    if sequential:
        results = [await one(item) for item in prepared]
    else:
        results = list(await asyncio.gather(*(one(item) for item in prepared)))
    story.extractions = [r for r in results if r is not None]
    return story


async def digest_story(
    articles: list[ArticleIn],
    prompts: dict[str, Prompt],
    llm: Completer,
    *,
    max_chars: int,
    sequential: bool,
    language: str = "en",
    story_id: str | None = None,
    on_progress: Progress | None = None,
) -> Digest:
    if not articles:
        raise InputError("a digest needs at least one article")
    story = await analyse_story(
        articles, prompts, llm, max_chars=max_chars, sequential=sequential, on_progress=on_progress
    )
    if story.llm_error is not None and not story.extractions:
        raise story.llm_error  # the model's fault, not the caller's: workers retry it
    if on_progress:
        on_progress("digesting", None)
    return await build_digest(
        story.extractions,
        prompts["digest"],
        llm,
        story_id=story_id,
        language=language,
        other_sources=story.other_sources,
    )
