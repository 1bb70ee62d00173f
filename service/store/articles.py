"""Articles as prepared: the numbered sentences every fact and digest cites.

The sentences are stored exactly as ``prepare`` numbered them, so a citation made today still
points at the same words after the preparation code changes. Deleting is soft: facts already in
published digests keep a source to show.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import ArticleRef, PreparedArticle, Sentence
from service.store import _dialect
from service.store.models import Article, new_id, utcnow


@dataclass(frozen=True)
class ArticleRecord:
    """A stored article: its ids and lifecycle around the prepared text."""

    id: str
    cms_id: str | None
    story_id: str | None
    prepared: PreparedArticle
    deleted_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def ref(self) -> ArticleRef:
        """How an extraction or a digest cites this article."""
        return ArticleRef.of(self.prepared, self.id)


def _record(row: Article) -> ArticleRecord:
    prepared = PreparedArticle(
        outlet=row.outlet,
        title=row.title,
        url=row.url,
        published_at=row.published_at,
        language=row.language,
        story_id=row.story_id,
        cms_id=row.cms_id,
        text=row.text,
        sentences=tuple(Sentence.model_validate(s) for s in row.sentences),
        content_hash=row.content_hash,
    )
    return ArticleRecord(
        id=row.id,
        cms_id=row.cms_id,
        story_id=row.story_id,
        prepared=prepared,
        deleted_at=row.deleted_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def save_article(
    *,
    session: AsyncSession,
    prepared: PreparedArticle,
    cms_id: str | None = None,
    story_id: str | None = None,
) -> ArticleRecord:
    """Insert the article, or update the one with the same ``cms_id`` in one atomic upsert.

    ``cms_id`` and ``story_id`` default to the prepared article's own. An update keeps the article
    id, revives a deleted article (the CMS published it again) and keeps its story when the
    update names none. Without a ``cms_id`` every call stores a new article.
    """
    cms_id = cms_id if cms_id is not None else prepared.cms_id
    story_id = story_id if story_id is not None else prepared.story_id
    now = utcnow()
    content = {
        "outlet": prepared.outlet,
        "title": prepared.title,
        "url": prepared.url,
        "published_at": prepared.published_at,
        "language": prepared.language,
        "content_hash": prepared.content_hash,
        "text": prepared.text,
        "sentences": [s.model_dump(mode="json") for s in prepared.sentences],
        "deleted_at": None,
        "updated_at": now,
    }
    values = {"id": new_id(), "cms_id": cms_id, "story_id": story_id, "created_at": now, **content}
    if cms_id is None:
        stored = await session.scalars(insert(Article).values(values).returning(Article))
    else:
        stmt = _dialect.insert(session, Article).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Article.cms_id],
            set_={**content, "story_id": func.coalesce(stmt.excluded.story_id, Article.story_id)},
        )
        stored = await session.scalars(stmt.returning(Article), execution_options={"populate_existing": True})
    return _record(stored.one())


async def get_article(*, session: AsyncSession, article_id: str) -> ArticleRecord | None:
    """The article, deleted or not: ``deleted_at`` tells the caller which."""
    row = await session.scalar(
        select(Article).where(Article.id == article_id).execution_options(populate_existing=True)
    )
    return _record(row) if row is not None else None


async def get_article_by_cms_id(*, session: AsyncSession, cms_id: str) -> ArticleRecord | None:
    row = await session.scalar(
        select(Article).where(Article.cms_id == cms_id).execution_options(populate_existing=True)
    )
    return _record(row) if row is not None else None


async def list_by_story(
    *, session: AsyncSession, story_id: str, include_deleted: bool = False
) -> list[ArticleRecord]:
    """The story's articles, oldest publication first (undated ones last), then arrival order."""
    stmt = select(Article).where(Article.story_id == story_id)
    if not include_deleted:
        stmt = stmt.where(Article.deleted_at.is_(None))
    stmt = stmt.order_by(Article.published_at.is_(None), Article.published_at, Article.created_at, Article.id)
    rows = await session.scalars(stmt.execution_options(populate_existing=True))
    return [_record(row) for row in rows]


async def mark_deleted(*, session: AsyncSession, article_id: str, at: datetime | None = None) -> bool:
    """Soft-delete; False when there is no such live article (a repeated delete changes nothing)."""
    now = at or utcnow()
    deleted = await session.scalar(
        update(Article)
        .where(Article.id == article_id, Article.deleted_at.is_(None))
        .values(deleted_at=now, updated_at=now)
        .returning(Article.id)
        .execution_options(synchronize_session=False)
    )
    return deleted is not None
