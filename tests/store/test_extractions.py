from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.store import articles, extractions, llm_calls
from tests.factories import call_usage, extraction, prepared_article

PROMPTS = {"key_facts@1": "a" * 64, "sentiment@2": "b" * 64}


def test_cache_key_covers_text_prompts_model_and_mode() -> None:
    key = extractions.cache_key(content_hash="h", prompts=PROMPTS, model="m", mode="json_schema")
    assert key == extractions.cache_key(
        content_hash="h", prompts=dict(reversed(PROMPTS.items())), model="m", mode="json_schema"
    )
    variants = [
        {"content_hash": "h2"},
        {"prompts": {**PROMPTS, "sentiment@2": "c" * 64}},
        {"prompts": {"key_facts@2": "a" * 64, "sentiment@2": "b" * 64}},
        {"model": "m2"},
        {"mode": "tools"},
    ]
    base = {"content_hash": "h", "prompts": PROMPTS, "model": "m", "mode": "json_schema"}
    keys = {extractions.cache_key(**{**base, **change}) for change in variants}  # type: ignore[arg-type]
    assert len(keys) == len(variants) and key not in keys and len(key) == 64


async def test_cache_hit_by_key(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        article = await articles.save_article(session=session, prepared=prepared_article(), cms_id="c1")
        result = extraction(article.ref())
        key = extractions.cache_key(
            content_hash=article.prepared.content_hash, prompts=PROMPTS, model="m", mode="json_schema"
        )
        assert await extractions.get_cached(session=session, cache_key=key) is None
        first = await extractions.save_extraction(
            session=session, article_id=article.id, cache_key=key, prompts=PROMPTS, model="m",
            mode="json_schema", extraction=result,
        )
        await llm_calls.save_calls(session=session, calls=[call_usage(), call_usage("sentiment@2")],
                                   extraction_id=first)
    async with sessions.begin() as session:
        assert await extractions.get_cached(session=session, cache_key=key) == result
        # A second worker that raced to the same key gets the stored row's id back.
        again = await extractions.save_extraction(
            session=session, article_id=article.id, cache_key=key, prompts=PROMPTS, model="m",
            mode="json_schema", extraction=result,
        )
        assert again == first
        calls = await llm_calls.list_calls(session=session, extraction_id=first)
        assert calls == [call_usage(), call_usage("sentiment@2")]


async def test_an_article_with_the_same_text_finds_the_analysis(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        wire = await articles.save_article(session=session, prepared=prepared_article(outlet="Wire"))
        key = extractions.cache_key(content_hash=wire.prepared.content_hash, prompts=PROMPTS, model="m", mode="x")
        await extractions.save_extraction(
            session=session, article_id=wire.id, cache_key=key, prompts=PROMPTS, model="m", mode="x",
            extraction=extraction(wire.ref()),
        )
        reprint = await articles.save_article(session=session, prepared=prepared_article(outlet="Daily"))
        other = await articles.save_article(session=session, prepared=prepared_article("Something else."))
    async with sessions() as session:
        found = await extractions.latest_for_article(session=session, article=reprint)
        assert found is not None and found.article == reprint.ref() and found.facts
        assert await extractions.latest_for_article(session=session, article=other) is None
