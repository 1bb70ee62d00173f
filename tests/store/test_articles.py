from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas import ArticleIn
from service.pipeline.text import prepare
from service.store import articles
from service.store.articles import Preparation
from tests.factories import prepared_article


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


# --- as received, then prepared by the analysis job (revision 0004) ----------------------------------------


def _received(body: str = "The council approved the budget. The mayor was pleased.", **changes: object) -> ArticleIn:
    values: dict[str, object] = {"id": "cms-r", "story_id": "s1", "outlet": "Daily", "title": "Budget", "body": body,
                                 "published_at": datetime(2025, 3, 1, 9, 30, tzinfo=UTC)}
    values.update(changes)
    return ArticleIn.model_validate(values)


async def test_an_article_is_stored_as_received_then_prepared(sessions: async_sessionmaker[AsyncSession]) -> None:
    article = _received()
    async with sessions.begin() as session:
        received = await articles.save_received(session=session, article=article)
    assert received.preparation == Preparation.PENDING and received.replaced_story_id is None
    assert received.source_hash == articles.source_hash(article)
    async with sessions() as session:
        pending = await articles.get_article(session=session, article_id=received.id)
    assert pending is not None and not pending.is_prepared and pending.received == article
    assert (pending.ref().content_hash, pending.ref().sentence_count, pending.ref().outlet) == ("", 0, "Daily")

    prepared = prepare(article, max_chars=10_000)
    async with sessions.begin() as session:
        stored = await articles.save_prepared(session=session, article_id=received.id,
                                              source_hash=received.source_hash, prepared=prepared)
        again = await articles.save_prepared(session=session, article_id=received.id,
                                             source_hash=received.source_hash, prepared=prepared)
    assert stored is not None and again is None  # only a pending row takes a preparation
    assert stored.prepared == prepared and stored.received is None  # the raw body is not kept
    assert stored.prepared.published_at == datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


async def test_the_same_article_again_keeps_its_preparation(sessions: async_sessionmaker[AsyncSession]) -> None:
    article = _received()
    async with sessions.begin() as session:
        first = await articles.save_received(session=session, article=article)
        await articles.save_prepared(session=session, article_id=first.id, source_hash=first.source_hash,
                                     prepared=prepare(article, max_chars=10_000))
    async with sessions.begin() as session:
        same = await articles.save_received(session=session, article=article)
        changed = await articles.save_received(session=session, article=_received(body="The council said no."))
    assert same.id == changed.id == first.id
    assert same.preparation == Preparation.PREPARED  # nothing to prepare again
    assert changed.preparation == Preparation.PENDING  # a new text: the old sentences are gone
    async with sessions() as session:
        current = await articles.get_article(session=session, article_id=first.id)
    assert current is not None and not current.is_prepared
    assert current.received is not None and current.received.body == "The council said no."


async def test_a_preparation_of_an_older_text_is_not_stored(sessions: async_sessionmaker[AsyncSession]) -> None:
    old = _received()
    async with sessions.begin() as session:
        first = await articles.save_received(session=session, article=old)
        await articles.save_received(session=session, article=_received(body="A newer text arrived."))
        late = await articles.save_prepared(session=session, article_id=first.id, source_hash=first.source_hash,
                                            prepared=prepare(old, max_chars=10_000))
        unusable = await articles.mark_unusable(session=session, article_id=first.id, source_hash=first.source_hash,
                                                reason="no readable sentence")
    assert late is None and unusable is None


async def test_an_unusable_article_keeps_its_body_and_reason(sessions: async_sessionmaker[AsyncSession]) -> None:
    article = _received(body="<p> </p>", content_type="html")
    async with sessions.begin() as session:
        received = await articles.save_received(session=session, article=article)
        marked = await articles.mark_unusable(session=session, article_id=received.id,
                                              source_hash=received.source_hash, reason="no readable sentence")
    assert marked is not None and marked.preparation == Preparation.UNUSABLE
    assert marked.preparation_error == "no readable sentence"
    assert marked.received == article and not marked.is_prepared


async def test_an_update_names_the_story_the_article_leaves(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        first = await articles.save_received(session=session, article=_received(story_id="old-story"))
        moved = await articles.save_received(session=session, article=_received(story_id="new-story"))
        assert await articles.mark_deleted(session=session, article_id=moved.id)
        revived = await articles.save_received(session=session, article=_received(story_id="third-story"))
    assert first.replaced_story_id is None
    assert (moved.story_id, moved.replaced_story_id) == ("new-story", "old-story")
    assert (revived.story_id, revived.replaced_story_id) == ("third-story", None)  # it was deleted: left nothing


async def test_articles_without_a_cms_id_are_always_new(sessions: async_sessionmaker[AsyncSession]) -> None:
    article = _received(id=None)
    async with sessions.begin() as session:
        a = await articles.save_received(session=session, article=article)
        b = await articles.save_received(session=session, article=article)
    assert a.id != b.id and a.cms_id is None and a.replaced_story_id is None
