"""Articles: as the CMS sent them, then as prepared, the numbered sentences every fact and digest cites.

The intake stores an article as received (``save_received``: its body, and ``preparation`` pending),
in one cheap statement; the analysis job prepares it off the request path and stores the result
(``save_prepared``), or why there is nothing to prepare (``mark_unusable``). Both only apply to the
text they were prepared from: an update that arrived meanwhile is never overwritten by an older text.

The sentences are stored exactly as ``prepare`` numbered them, so a citation made today still
points at the same words after the preparation code changes. Deleting is soft: facts already in
published digests keep a source to show.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import ArticleIn, ArticleRef, PreparedArticle, Sentence
from service.store import _dialect
from service.store.models import Article, Preparation, UTCDateTime, new_id, utcnow

__all__ = [
    "ArticleNotPrepared",
    "ArticleRecord",
    "Preparation",
    "Received",
    "Receiving",
    "get_article",
    "get_article_by_cms_id",
    "list_by_story",
    "mark_deleted",
    "mark_unusable",
    "save_article",
    "save_prepared",
    "save_received",
    "save_received_many",
    "source_hash",
]


class ArticleNotPrepared(RuntimeError):
    """An article's prepared text was read before the analysis job prepared it (a bug in the caller)."""


def source_hash(article: ArticleIn) -> str:
    """sha256 of what preparing an article reads: two arrivals with the same hash prepare alike.

    Joined with NUL, which no accepted text contains (``schemas.article.Text``), so no two different
    articles join to the same bytes. About 40 microseconds for a 60,000-character body.
    """
    parts = (article.outlet, article.title, article.content_type, article.language or "", article.body)
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class ArticleRecord:
    """A stored article: its ids and lifecycle around its text, as received or as prepared."""

    id: str
    cms_id: str | None
    story_id: str | None
    #: The prepared text, or None while ``preparation`` is pending or unusable (see :attr:`prepared`).
    prepared_text: PreparedArticle | None
    deleted_at: datetime | None
    created_at: datetime
    updated_at: datetime
    preparation: Preparation = Preparation.PREPARED
    preparation_error: str | None = None
    #: What the CMS sent, kept while the article waits to be prepared (and when it turned out unusable).
    received: ArticleIn | None = None
    source_hash: str | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def is_prepared(self) -> bool:
        return self.prepared_text is not None

    @property
    def prepared(self) -> PreparedArticle:
        """The numbered sentences; only for a prepared article (``service.jobs.tasks`` prepares it first)."""
        if self.prepared_text is None:
            raise ArticleNotPrepared(f"article {self.id} is {self.preparation}, not prepared")
        return self.prepared_text

    @property
    def dedupe_hash(self) -> str:
        """What names this version of the article in job keys: the source hash (from intake on), else the
        prepared text's hash (rows stored prepared, before revision 0004)."""
        return self.source_hash or (self.prepared_text.content_hash if self.prepared_text else "")

    def ref(self) -> ArticleRef:
        """How an extraction or a digest cites this article; before preparation, with no hash or sentences."""
        if self.prepared_text is not None:
            return ArticleRef.of(self.prepared_text, self.id)
        source = self.received
        return ArticleRef(article_id=self.id, outlet=source.outlet if source else "", title=source.title if source
                          else "", url=source.url if source else None, published_at=source.published_at if source
                          else None, language=source.language if source else None, content_hash="",
                          sentence_count=0)


def _record(row: Article) -> ArticleRecord:
    preparation = Preparation(row.preparation)
    prepared = None
    if preparation == Preparation.PREPARED:
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
    received = None
    if row.body is not None:
        # Validated when it arrived: rebuilt without validating again.
        received = ArticleIn.model_construct(
            id=row.cms_id, story_id=row.story_id, outlet=row.outlet, title=row.title, body=row.body,
            content_type="html" if row.content_type == "html" else "text", url=row.url, published_at=row.published_at,
            language=row.language)
    return ArticleRecord(
        id=row.id,
        cms_id=row.cms_id,
        story_id=row.story_id,
        prepared_text=prepared,
        deleted_at=row.deleted_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        preparation=preparation,
        preparation_error=row.preparation_error,
        received=received,
        source_hash=row.source_hash,
    )


async def _upsert(session: AsyncSession, values: dict[str, Any], content: dict[str, Any]) -> ArticleRecord:
    """Insert ``values``, or update the row with the same ``cms_id`` with ``content`` in one atomic statement.

    The story is kept when the update names none.
    """
    if values["cms_id"] is None:
        stored = await session.scalars(insert(Article).values(values).returning(Article))
        return _record(stored.one())
    stmt = _dialect.insert(session, Article).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Article.cms_id],
        set_={**content, "story_id": func.coalesce(stmt.excluded.story_id, Article.story_id)},
    )
    stored = await session.scalars(stmt.returning(Article), execution_options={"populate_existing": True})
    return _record(stored.one())


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
        "preparation": Preparation.PREPARED.value,
        "preparation_error": None,
        "body": None,
        "content_type": None,
        "source_hash": None,
        "deleted_at": None,
        "updated_at": now,
    }
    values = {"id": new_id(), "cms_id": cms_id, "story_id": story_id, "created_at": now, **content}
    return await _upsert(session, values, content)


@dataclass(frozen=True)
class Received:
    """What the intake needs back from :func:`save_received`."""

    id: str
    cms_id: str | None
    story_id: str | None
    source_hash: str
    preparation: Preparation
    #: The story the article belonged to before this arrival, when it was live (it may have moved).
    replaced_story_id: str | None

    @property
    def dedupe_hash(self) -> str:
        return self.source_hash


#: What an update that changes nothing (the same source hash) leaves as it was: the prepared text, or
#: the pending body, and where its preparation stands.
_PREPARED_STATE = ("outlet", "title", "content_hash", "text", "sentences", "preparation", "preparation_error",
                   "body", "content_type")
_KEPT = ", ".join(f"{c} = CASE WHEN articles.source_hash = excluded.source_hash THEN articles.{c} ELSE excluded.{c} END"
                  for c in _PREPARED_STATE)
# Written as SQL, not built with SQLAlchemy's constructs: it runs once per event at hundreds of events a
# second, and building and cache-keying the equivalent construct costs several times the statement itself.
# The same text on both databases (SQLite has had upserts with RETURNING since 3.35). A NULL cms_id never
# conflicts: an article without one is always new. Only constants are formatted in, never a value.
_COLUMNS = """id, cms_id, story_id, outlet, title, url, published_at, language, content_hash, text,
                      sentences, preparation, preparation_error, body, content_type, source_hash, deleted_at,
                      created_at, updated_at"""
_UPSERT = f"""ON CONFLICT (cms_id) DO UPDATE SET
    story_id = coalesce(excluded.story_id, articles.story_id), url = excluded.url,
    published_at = excluded.published_at, language = excluded.language, deleted_at = NULL,
    updated_at = excluded.updated_at, {_KEPT}, source_hash = excluded.source_hash"""
_RECEIVE = f"""
INSERT INTO articles ({_COLUMNS})
VALUES (:id, :cms_id, :story_id, :outlet, :title, :url, :published_at, :language, '', '', '[]',
        '{Preparation.PENDING.value}', NULL, :body, :content_type, :source_hash, NULL, :now, :now)
{_UPSERT}
RETURNING id, story_id, source_hash, preparation"""  # noqa: S608
# PostgreSQL evaluates a subquery in RETURNING on the rows as they were before the statement, so the
# story the article is leaving comes back with the same round trip. SQLite documents no such thing:
# there it is read first (its single writer keeps the two statements consistent).
_REPLACED = "SELECT old.story_id FROM articles AS old WHERE old.cms_id = :cms_id AND old.deleted_at IS NULL"
_TIMES = (bindparam("published_at", type_=UTCDateTime()), bindparam("now", type_=UTCDateTime()))
_RECEIVE_POSTGRESQL = text(f"{_RECEIVE}, ({_REPLACED}) AS replaced_story_id").bindparams(*_TIMES)
_RECEIVE_SQLITE = text(f"{_RECEIVE}, NULL AS replaced_story_id").bindparams(*_TIMES)
_REPLACED_SQLITE = text(_REPLACED)
# The same upsert for many articles in one statement: the rows as arrays (PostgreSQL) or as one JSON array
# (SQLite), so the text does not depend on how many there are and is prepared once. In a SELECT, unlike in
# VALUES, PostgreSQL types an untyped literal as text: the JSON and timestamp columns get theirs by CAST.
_FIELDS = ("id", "cms_id", "story_id", "outlet", "title", "url", "published_at", "language", "body", "content_type",
           "source_hash", "now")
_ARRAYS = ("varchar", "varchar", "varchar", "varchar", "text", "text", "timestamptz", "varchar", "text", "varchar",
           "varchar", "timestamptz")
_RECEIVE_MANY_POSTGRESQL = text(f"""
INSERT INTO articles ({_COLUMNS})
SELECT r.id, r.cms_id, r.story_id, r.outlet, r.title, r.url, r.published_at, r.language, '', '', CAST('[]' AS jsonb),
       '{Preparation.PENDING.value}', CAST(NULL AS text), r.body, r.content_type, r.source_hash,
       CAST(NULL AS timestamptz), r.now, r.now
FROM unnest({", ".join(f"CAST(:{f} AS {t}[])" for f, t in zip(_FIELDS, _ARRAYS, strict=True))})
     AS r({", ".join(_FIELDS)})
{_UPSERT}
RETURNING id, cms_id, story_id, source_hash, preparation,
    (SELECT old.story_id FROM articles AS old WHERE old.cms_id = articles.cms_id AND old.deleted_at IS NULL)
    AS replaced_story_id""")  # noqa: S608
_RECEIVE_MANY_SQLITE = text(f"""
INSERT INTO articles ({_COLUMNS})
SELECT {", ".join(f"json_extract(value, '$[{n}]')" for n in range(8))}, '', '', '[]', '{Preparation.PENDING.value}',
       NULL, {", ".join(f"json_extract(value, '$[{n}]')" for n in range(8, 11))}, NULL, json_extract(value, '$[11]'),
       json_extract(value, '$[11]')
FROM json_each(:rows) WHERE true
{_UPSERT}
RETURNING id, cms_id, story_id, source_hash, preparation, NULL AS replaced_story_id""")  # noqa: S608
# (The WHERE: SQLite's parser would otherwise take ON CONFLICT for a join's ON.)
_REPLACED_MANY_SQLITE = text(
    "SELECT cms_id, story_id FROM articles WHERE deleted_at IS NULL AND cms_id IN (SELECT value FROM json_each(:ids))")


def _params(article: ArticleIn, cms_id: str | None, story_id: str | None, hashed: str | None) -> dict[str, Any]:
    cms_id = cms_id if cms_id is not None else article.id
    return {"id": new_id(), "cms_id": cms_id, "story_id": story_id if story_id is not None else article.story_id,
            "outlet": article.outlet, "title": article.title, "url": article.url,
            "published_at": article.published_at, "language": article.language, "body": article.body,
            "content_type": article.content_type, "source_hash": hashed or source_hash(article), "now": utcnow()}


async def save_received(
    *,
    session: AsyncSession,
    article: ArticleIn,
    cms_id: str | None = None,
    story_id: str | None = None,
    hashed: str | None = None,
) -> Received:
    """Store an article as received, to be prepared by its analysis job: one statement, no parsing.

    Insert, or update the article with the same ``cms_id`` (default: the article's own ``id``) in
    place, as :func:`save_article` does: an update keeps the article id, revives a deleted article
    and keeps its story when it names none. An update whose source hash (``hashed``, default
    :func:`source_hash`) equals the stored one keeps the stored preparation: the same article sent
    again is not prepared again. Any other becomes pending, its old text gone.
    """
    params = _params(article, cms_id, story_id, hashed)
    cms_id = params["cms_id"]
    replaced = None
    if _dialect.dialect_name(session) == "postgresql":
        row = (await session.execute(_RECEIVE_POSTGRESQL, params)).one()
        replaced = row.replaced_story_id
    else:
        if cms_id is not None:
            replaced = await session.scalar(_REPLACED_SQLITE, {"cms_id": cms_id})
        row = (await session.execute(_RECEIVE_SQLITE, params)).one()
    return Received(id=row.id, cms_id=cms_id, story_id=row.story_id, source_hash=row.source_hash,
                    preparation=Preparation(row.preparation), replaced_story_id=replaced)


@dataclass(frozen=True)
class Receiving:
    """One article for :func:`save_received_many`: :func:`save_received`'s arguments."""

    article: ArticleIn
    cms_id: str | None = None
    story_id: str | None = None
    hashed: str | None = None


async def save_received_many(*, session: AsyncSession, items: Sequence[Receiving]) -> list[Received]:
    """:func:`save_received` for each item, in order: one statement for all (two on SQLite).

    The same as storing them one after another. An article that comes twice (its ``cms_id`` again)
    is stored in a second statement after the first, since one upsert cannot change a row twice.
    """
    params = [_params(i.article, i.cms_id, i.story_id, i.hashed) for i in items]
    rounds: list[list[int]] = []
    seen: dict[str, int] = {}  # cms_id -> how many rounds have it already
    for n, p in enumerate(params):
        k = seen.get(p["cms_id"], 0) if p["cms_id"] is not None else 0
        if p["cms_id"] is not None:
            seen[p["cms_id"]] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(n)
    found: list[Received | None] = [None] * len(params)
    for members in rounds:
        for n, received in zip(members, await _receive_round(session, [params[n] for n in members]), strict=True):
            found[n] = received
    return [r for r in found if r is not None]


async def _receive_round(session: AsyncSession, params: list[dict[str, Any]]) -> list[Received]:
    """Store articles whose cms_ids differ, in one statement; their records in the same order."""
    when = _stored_as(session, Article.published_at)
    replaced: dict[str | None, str | None] = {}
    postgresql = _dialect.dialect_name(session) == "postgresql"
    if postgresql:
        arrays = {f: [p[f] for p in params] for f in _FIELDS}
        arrays["published_at"] = [when(at) for at in arrays["published_at"]]
        arrays["now"] = [when(at) for at in arrays["now"]]
        rows = (await session.execute(_RECEIVE_MANY_POSTGRESQL, arrays)).all()
    else:
        if ids := [p["cms_id"] for p in params if p["cms_id"] is not None]:
            found = await session.execute(_REPLACED_MANY_SQLITE, {"ids": json.dumps(ids)})
            replaced = {row.cms_id: row.story_id for row in found}
        encoded = json.dumps([[when(p[f]) if f in ("published_at", "now") else p[f] for f in _FIELDS] for p in params])
        rows = (await session.execute(_RECEIVE_MANY_SQLITE, {"rows": encoded})).all()
    by_cms_id = {row.cms_id: row for row in rows if row.cms_id is not None}
    by_id = {row.id: row for row in rows}
    records = []
    for p in params:
        row = by_cms_id[p["cms_id"]] if p["cms_id"] is not None else by_id[p["id"]]
        records.append(Received(
            id=row.id, cms_id=p["cms_id"], story_id=row.story_id, source_hash=row.source_hash,
            preparation=Preparation(row.preparation),
            replaced_story_id=row.replaced_story_id if postgresql else replaced.get(p["cms_id"])))
    return records


def _stored_as(session: AsyncSession, column: Any) -> Callable[[Any], Any]:
    """What the column's type makes of a value for this database, as a bound parameter would be stored."""
    dialect = session.get_bind().dialect
    return column.type.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)


def _pending_as(article_id: str, hashed: str | None) -> ColumnElement[bool]:
    """The row of ``article_id`` while it still waits with the text of ``hashed``."""
    clause = (Article.id == article_id) & (Article.preparation == Preparation.PENDING.value)
    return clause & (Article.source_hash.is_(None) if hashed is None else Article.source_hash == hashed)


async def save_prepared(*, session: AsyncSession, article_id: str, source_hash: str | None,
                        prepared: PreparedArticle) -> ArticleRecord | None:
    """Store the prepared text of a pending article; None when the row changed meanwhile (another text
    arrived, or another job prepared it first): the caller reads it again."""
    row = await session.scalar(
        update(Article)
        .where(_pending_as(article_id, source_hash))
        .values(outlet=prepared.outlet, title=prepared.title, content_hash=prepared.content_hash, text=prepared.text,
                sentences=[s.model_dump(mode="json") for s in prepared.sentences],
                preparation=Preparation.PREPARED.value, preparation_error=None, body=None, updated_at=utcnow())
        .returning(Article)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return _record(row) if row is not None else None


async def mark_unusable(*, session: AsyncSession, article_id: str, source_hash: str | None,
                        reason: str) -> ArticleRecord | None:
    """Record why a pending article cannot be prepared (its body is kept); None as for :func:`save_prepared`."""
    row = await session.scalar(
        update(Article)
        .where(_pending_as(article_id, source_hash))
        .values(preparation=Preparation.UNUSABLE.value, preparation_error=reason[:2000], updated_at=utcnow())
        .returning(Article)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return _record(row) if row is not None else None


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
