"""The job functions: analyse one article, build one digest. Same code on any job engine.

Each takes a :class:`JobContext` and its payload dict, commits its own results and returns the
ids it produced. Both are idempotent, because a worker can die after committing a result and
before marking its job done, and the job then runs again: an analysis is found again under its
cache key (text hash, prompt versions and hashes, model, mode), and a digest under the id the API
announced in its 202. Raise ``InputError`` for what no retry can fix; any ``LLMError`` is retried.

An article arrives as the CMS sent it (the intake does not prepare it): :func:`prepared_record`
prepares it here, in a thread so that a long page never holds the event loop, and stores the
numbered sentences; an article with no readable sentence is marked unusable with the reason, and
its analysis fails for good (a digest lists it as a failed source).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from schemas import Digest, Extraction, Source
from service import metrics
from service.errors import InputError, LLMError, LLMOutputError, NewsdigestError, NotFoundError, UnusableArticle
from service.jobs.context import JobContext, Payload, Result
from service.pipeline.extract import extract_article
from service.pipeline.story import StoryArticle, StoryOptions, digest_story
from service.pipeline.text import prepare
from service.prompts import Prompt
from service.store import articles, digests, extractions, llm_calls
from service.store.articles import ArticleRecord, Preparation

log = structlog.get_logger(__name__)

#: The prompts an article's analysis runs; the digest prompt belongs to the story.
ARTICLE_PROMPTS = ("key_facts", "sentiment")


@dataclass(frozen=True)
class Analysis:
    extraction: Extraction
    cache_key: str
    cache_hit: bool
    extraction_id: str | None = None

    @property
    def errors(self) -> dict[str, str]:
        """Prompts that produced nothing usable; such an analysis is never cached."""
        return {name: prov.error for name, prov in self.extraction.provenance.items() if prov.error}


def extraction_key(article: ArticleRecord, prompts: dict[str, Prompt], ctx: JobContext) -> str:
    refs = {prompts[name].ref: prompts[name].sha256 for name in ARTICLE_PROMPTS}
    return extractions.cache_key(content_hash=article.prepared.content_hash, prompts=refs,
                                 model=ctx.llm.model, mode=ctx.llm.mode)


# A story refresh and the article's own job often want the same text at the same moment; the second
# waits for the first and reads its stored result instead of paying the model again. Per process:
# engine workers on other machines may still overlap, which costs calls, never correctness.
_analyses_in_flight: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


async def analyse(ctx: JobContext, article: ArticleRecord, prompts: dict[str, Prompt]) -> Analysis:
    """The article's analysis from the cache, or from the model and then stored with its calls."""
    key = extraction_key(article, prompts, ctx)
    lock = _analyses_in_flight.setdefault(key, asyncio.Lock())
    async with lock:
        return await _analyse_once(ctx, article, prompts, key)


async def _analyse_once(ctx: JobContext, article: ArticleRecord, prompts: dict[str, Prompt], key: str) -> Analysis:
    async with ctx.sessions() as session:
        cached = await extractions.get_cached(session=session, cache_key=key)
    if cached is not None:
        log.info("analysis.cache_hit", article_id=article.id)
        # The cached result may have been paid for by another article with the same text.
        return Analysis(cached.model_copy(update={"article": article.ref()}), key, cache_hit=True)
    chosen = {name: prompts[name] for name in ARTICLE_PROMPTS}
    try:
        extraction = await extract_article(article.prepared, chosen, ctx.llm, article_id=article.id,
                                           sequential=ctx.settings.runs_sequentially,
                                           section_chars=ctx.settings.article_section_chars)
    except LLMError as exc:
        if exc.usage is not None:  # the failed call was paid for too
            async with ctx.sessions() as session, session.begin():
                await llm_calls.save_calls(session=session, calls=[exc.usage])
        raise
    metrics.record_outcomes(extraction.provenance.values())
    analysis = Analysis(extraction.model_copy(update={"article": article.ref()}), key, cache_hit=False)
    calls = [call for prov in extraction.provenance.values() for call in prov.calls]
    async with ctx.sessions() as session, session.begin():
        extraction_id = None
        if not analysis.errors:
            extraction_id = await extractions.save_extraction(
                session=session, article_id=article.id, cache_key=key,
                prompts={p.ref: p.sha256 for p in chosen.values()}, model=ctx.llm.model, mode=ctx.llm.mode,
                extraction=analysis.extraction)
        await llm_calls.save_calls(session=session, calls=calls, extraction_id=extraction_id)
    log.info("analysis.stored" if extraction_id else "analysis.unusable", article_id=article.id,
             facts=len(extraction.facts), calls=len(calls), errors=sorted(analysis.errors))
    return Analysis(analysis.extraction, key, cache_hit=False, extraction_id=extraction_id)


async def _load(ctx: JobContext, article_ids: list[str]) -> list[ArticleRecord]:
    async with ctx.sessions() as session:
        found = [await articles.get_article(session=session, article_id=i) for i in article_ids]
    missing = [i for i, record in zip(article_ids, found, strict=True) if record is None]
    if missing:
        raise NotFoundError(f"unknown article id(s): {', '.join(missing)}", article_ids=missing)
    return [record for record in found if record is not None]


#: How often an article that keeps changing under its job is prepared again before the job gives up
#: (and is retried later): each new text has a job of its own anyway.
_PREPARE_TRIES = 3


async def prepared_record(ctx: JobContext, record: ArticleRecord) -> ArticleRecord:
    """The article with its text prepared: as stored, or prepared now and stored.

    ``prepare`` runs in a thread (``service.pipeline.text`` keeps one sentence splitter per thread):
    trafilatura and pysbd take up to tens of milliseconds for a long page, which on the event loop
    would stall every request and job of the process. The result is stored only over the text it
    was prepared from; when the article changed meanwhile, or another job prepared it first, the
    stored row is read again and used. Raises :class:`UnusableArticle` for an article with nothing
    to prepare, after recording why on the article.
    """
    for _ in range(_PREPARE_TRIES):
        if record.preparation == Preparation.PREPARED:
            return record
        if record.preparation == Preparation.UNUSABLE or record.received is None:
            raise UnusableArticle(record.preparation_error or f"article {record.id} has no text to prepare")
        try:
            prepared = await asyncio.to_thread(prepare, record.received, max_chars=ctx.settings.max_article_chars)
        except InputError as exc:
            async with ctx.sessions() as session, session.begin():
                stored = await articles.mark_unusable(session=session, article_id=record.id,
                                                      source_hash=record.source_hash, reason=exc.detail)
            if stored is not None:
                log.info("article.unusable", article_id=record.id, reason=exc.detail)
                raise UnusableArticle(exc.detail) from exc
        else:
            async with ctx.sessions() as session, session.begin():
                stored = await articles.save_prepared(session=session, article_id=record.id,
                                                      source_hash=record.source_hash, prepared=prepared)
            if stored is not None:
                log.info("article.prepared", article_id=record.id, sentences=len(prepared.sentences))
                return stored
        (record,) = await _load(ctx, [record.id])
    raise NewsdigestError(f"article {record.id} changed {_PREPARE_TRIES} times while it was being prepared")


async def _prepared_records(ctx: JobContext, records: list[ArticleRecord]) -> tuple[list[ArticleRecord], list[Source]]:
    """The records prepared (those whose analysis job has not run yet are prepared here), and the unusable
    ones as failed sources of the digest, as the CLI lists a file it cannot read."""
    ready: list[ArticleRecord] = []
    unusable: list[Source] = []
    for record in records:
        try:
            ready.append(await prepared_record(ctx, record))
        except UnusableArticle as exc:
            unusable.append(Source.of(record.ref(), status="failed", error=exc.detail))
    return ready, unusable


async def analyze_article(ctx: JobContext, payload: Payload) -> Result:
    """Payload ``article_id`` and optional ``pins`` (``["key_facts@1"]``)."""
    prompts = ctx.registry.resolve(payload.get("pins") or [])
    (article,) = await _load(ctx, [payload["article_id"]])
    if article.deleted:
        raise NotFoundError(f"article {article.id} was deleted")
    article = await prepared_record(ctx, article)
    analysis = await analyse(ctx, article, prompts)
    if analysis.errors:
        # Not cached, so another attempt asks the model afresh.
        raise LLMOutputError("; ".join(f"{name}: {error}" for name, error in sorted(analysis.errors.items())))
    return {"article_id": article.id, "extraction_id": analysis.extraction_id, "cache_hit": analysis.cache_hit}


class _JobStore:
    """The story's persistence for the job functions: the extraction and digest caches, the calls paid."""

    def __init__(self, ctx: JobContext, records: dict[str, ArticleRecord], prompts: dict[str, Prompt]) -> None:
        self.ctx, self.records, self.prompts = ctx, records, prompts
        self.keys: dict[str, str] = {}  # article id -> the cache key of its analysis, "uncached" if unusable
        self.hit: bool = False

    async def analysis(self, article: StoryArticle, run: Callable[[], Awaitable[Extraction]]) -> Extraction:
        result = await analyse(self.ctx, self.records[article.article_id or ""], self.prompts)
        self.keys[article.article_id or ""] = "uncached" if result.errors else result.cache_key
        return result.extraction

    async def digest(self, extractions: list[Extraction], failed: list[Source],
                     run: Callable[[], Awaitable[Digest]]) -> Digest:
        keys = dict(self.keys)
        keys.update({s.article_id or "": s.status for s in failed if s.status == "failed"})
        prompt, settings = self.prompts["digest"], self.ctx.settings
        self.key = digests.cache_key(articles=keys, prompt=prompt.ref, prompt_hash=prompt.sha256,
                                     model=self.ctx.llm.model, mode=self.ctx.llm.mode,
                                     language=settings.digest_language)
        # A digest over a failed or unusable analysis is never reused: the next build may do better.
        if not any(s.status == "failed" for s in failed) and "uncached" not in keys.values():
            async with self.ctx.sessions() as session:
                found = await digests.find_by_cache_key(session=session, cache_key=self.key)
            # Nor is one the service wrote alone because the model's answer was unusable (provenance.error).
            if found is not None and not (found.digest.provenance and found.digest.provenance.error):
                self.hit = True
                cached: Digest = found.digest
                return cached
        built = await run()
        if built.provenance is not None:
            metrics.record_outcomes([built.provenance])
        return built


async def build_digest(ctx: JobContext, payload: Payload) -> Result:
    """Payload ``digest_id``, ``article_ids``, optional ``story_id`` and ``pins``."""
    digest_id: str = payload["digest_id"]
    story_id: str | None = payload.get("story_id")
    async with ctx.sessions() as session:
        if await digests.get_digest(session=session, digest_id=digest_id) is not None:
            return {"digest_id": digest_id, "story_id": story_id, "cache_hit": True}  # a re-run after a crash
    loaded = await _load(ctx, list(payload["article_ids"]))
    records, unusable = await _prepared_records(ctx, loaded)
    prompts = ctx.registry.resolve(payload.get("pins") or [])
    store = _JobStore(ctx, {r.id: r for r in records}, prompts)
    options = StoryOptions(sequential=ctx.settings.runs_sequentially, section_chars=ctx.settings.article_section_chars,
                           language=ctx.settings.digest_language, story_id=story_id)
    built = await digest_story([StoryArticle(r.prepared, r.id) for r in records], prompts, ctx.llm, options,
                               failed=unusable, store=store)
    result = built.model_copy(update={"story_id": story_id})
    calls = [] if store.hit or result.provenance is None else result.provenance.calls
    async with ctx.sessions() as session, session.begin():
        await digests.save_digest(session=session, digest=result, article_ids=[r.id for r in loaded],
                                  cache_key=store.key, story_id=story_id, digest_id=digest_id)
        await llm_calls.save_calls(session=session, calls=calls, digest_id=digest_id)
    failed = sum(s.status == "failed" for s in result.sources)
    log.info("digest.stored", digest_id=digest_id, story_id=story_id, cache_hit=store.hit,
             statements=len(result.statements), failed_sources=failed)
    return {"digest_id": digest_id, "story_id": story_id, "cache_hit": store.hit}

