from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.store import digests, llm_calls
from tests.factories import call_usage, digest


def test_cache_key_ignores_article_order_only() -> None:
    base = {"prompt": "digest@1", "prompt_hash": "h", "model": "m", "mode": "json_schema", "language": "en"}
    key = digests.cache_key(articles={"a1": "k1", "a2": "k2"}, **base)
    assert key == digests.cache_key(articles={"a2": "k2", "a1": "k1"}, **base)
    assert key != digests.cache_key(articles={"a1": "k1", "a2": "k3"}, **base)
    assert key != digests.cache_key(articles={"a1": "k1", "a2": "k2"}, **{**base, "language": "de"})


async def test_the_newest_digest_of_a_story_is_current(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        old = await digests.save_digest(session=session, digest=digest("v1"), article_ids=["a1"], cache_key="k1")
        assert old.is_current and old.digest.created_at is not None
    async with sessions.begin() as session:
        new = await digests.save_digest(
            session=session, digest=digest("v2"), article_ids=["a1", "a2"], cache_key="k2", digest_id="announced-id"
        )
        await llm_calls.save_calls(session=session, calls=[call_usage("digest@1")], digest_id=new.id)
        loose = await digests.save_digest(
            session=session, digest=digest("no story", story_id=None), article_ids=["a3"], cache_key="k3"
        )
    assert new.id == "announced-id" and not loose.is_current
    async with sessions() as session:
        current = await digests.current_for_story(session=session, story_id="story-1")
        assert current is not None and current.id == new.id and current.article_ids == ("a1", "a2")
        previous = await digests.get_digest(session=session, digest_id=old.id)
        assert previous is not None and not previous.is_current and previous.digest.headline == "v1"
        cached = await digests.find_by_cache_key(session=session, cache_key="k2")
        assert cached == current
        assert await digests.find_by_cache_key(session=session, cache_key="nope") is None
        assert await digests.current_for_story(session=session, story_id="story-2") is None
        assert [c.prompt for c in await llm_calls.list_calls(session=session, digest_id=new.id)] == ["digest@1"]
