from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.store import articles

from .factories import prepared_article


async def test_save_and_read_an_article(sessions: async_sessionmaker[AsyncSession]) -> None:
    paris = timezone(timedelta(hours=2))
    prepared = prepared_article(story_id="s1", published_at=datetime(2025, 3, 1, 11, 30, tzinfo=paris))
    async with sessions.begin() as session:
        saved = await articles.save_article(session=session, prepared=prepared, cms_id="cms-1")
    async with sessions() as session:
        got = await articles.get_article(session=session, article_id=saved.id)
    assert got == saved
    assert got.prepared == prepared.model_copy(update={"cms_id": "cms-1"})
    assert got.prepared.published_at == datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
    assert got.created_at.tzinfo is not None and not got.deleted
    assert got.ref().sentence_count == 2 and got.ref().article_id == saved.id


async def test_saving_the_same_cms_id_updates_in_place(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        first = await articles.save_article(session=session, prepared=prepared_article(story_id="s1"), cms_id="c")
        assert await articles.mark_deleted(session=session, article_id=first.id)
    updated = prepared_article("The council rejected the budget.")
    async with sessions.begin() as session:
        second = await articles.save_article(session=session, prepared=updated, cms_id="c")
    assert second.id == first.id
    assert second.prepared.text == "The council rejected the budget."
    assert second.story_id == "s1"  # an update that names no story keeps the article in its story
    assert not second.deleted  # published again
    assert second.created_at == first.created_at and second.updated_at > first.updated_at


async def test_articles_without_cms_id_are_always_new(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        a = await articles.save_article(session=session, prepared=prepared_article())
        b = await articles.save_article(session=session, prepared=prepared_article())
    assert a.id != b.id


async def test_list_by_story_and_mark_deleted(sessions: async_sessionmaker[AsyncSession]) -> None:
    day = datetime(2025, 3, 1, tzinfo=UTC)
    async with sessions.begin() as session:
        late = await articles.save_article(
            session=session, prepared=prepared_article(outlet="B", published_at=day + timedelta(days=1)), story_id="s"
        )
        undated = await articles.save_article(
            session=session, prepared=prepared_article(outlet="C", published_at=None), story_id="s"
        )
        early = await articles.save_article(
            session=session, prepared=prepared_article(outlet="A", published_at=day), story_id="s"
        )
        await articles.save_article(session=session, prepared=prepared_article(), story_id="other")
    async with sessions.begin() as session:
        listed = await articles.list_by_story(session=session, story_id="s")
        assert [a.id for a in listed] == [early.id, late.id, undated.id]
        assert await articles.mark_deleted(session=session, article_id=late.id)
        assert not await articles.mark_deleted(session=session, article_id=late.id)
        assert not await articles.mark_deleted(session=session, article_id="no-such-article")
    async with sessions() as session:
        assert [a.id for a in await articles.list_by_story(session=session, story_id="s")] == [early.id, undated.id]
        everything = await articles.list_by_story(session=session, story_id="s", include_deleted=True)
        assert len(everything) == 3
        gone = await articles.get_article(session=session, article_id=late.id)
        assert gone is not None and gone.deleted
        assert await articles.get_article(session=session, article_id="missing") is None
        by_cms = await articles.get_article_by_cms_id(session=session, cms_id="missing")
        assert by_cms is None
