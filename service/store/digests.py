"""Published digests, and which one is current for each story.

Every build is kept (an editor may compare versions, and an old link must keep working); exactly
one per story is marked current, which is what ``GET /v1/stories/{id}/digest`` serves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import Digest
from service.store import _dialect
from service.store.models import Digest as DigestRow
from service.store.models import new_id, utcnow

_KEY_VERSION = 1


@dataclass(frozen=True)
class DigestRecord:
    id: str
    story_id: str | None
    cache_key: str
    article_ids: tuple[str, ...]
    digest: Digest
    is_current: bool
    created_at: datetime


def _record(row: DigestRow) -> DigestRecord:
    return DigestRecord(
        id=row.id,
        story_id=row.story_id,
        cache_key=row.cache_key,
        article_ids=tuple(row.article_ids),
        digest=Digest.model_validate(row.result),
        is_current=row.is_current,
        created_at=row.created_at,
    )


def cache_key(
    *, articles: Mapping[str, str], prompt: str, prompt_hash: str, model: str, mode: str, language: str
) -> str:
    """sha256 over the inputs of a digest build.

    ``articles`` maps each article id to the cache key of the extraction the digest reads: ids
    because citations name articles, extraction keys because they pin text, prompts and model.
    """
    material = {
        "v": _KEY_VERSION,
        "articles": sorted(articles.items()),
        "prompt": [prompt, prompt_hash],
        "model": model,
        "mode": mode,
        "language": language,
    }
    return hashlib.sha256(json.dumps(material, separators=(",", ":")).encode()).hexdigest()


async def save_digest(
    *,
    session: AsyncSession,
    digest: Digest,
    article_ids: Sequence[str],
    cache_key: str,
    story_id: str | None = None,
    digest_id: str | None = None,
) -> DigestRecord:
    """Store a digest; with a story (``story_id`` or the digest's own) it becomes the current one.

    ``digest_id`` lets a job store under the id the API already announced in its 202.
    """
    story = story_id if story_id is not None else digest.story_id
    now = utcnow()
    if digest.created_at is None:
        digest = digest.model_copy(update={"created_at": now})
    if story is not None:
        # Without the lock two builds racing on PostgreSQL would both find no current digest to
        # unmark, and the second would hit the one-current-per-story index.
        await _dialect.lock(session, f"digests:{story}")
        await session.execute(
            update(DigestRow)
            .where(DigestRow.story_id == story, DigestRow.is_current)
            .values(is_current=False)
        )
    row = DigestRow(
        id=digest_id or new_id(),
        story_id=story,
        cache_key=cache_key,
        article_ids=list(article_ids),
        result=digest.model_dump(mode="json"),
        is_current=story is not None,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    return _record(row)


async def get_digest(*, session: AsyncSession, digest_id: str) -> DigestRecord | None:
    row = await session.scalar(
        select(DigestRow).where(DigestRow.id == digest_id).execution_options(populate_existing=True)
    )
    return _record(row) if row is not None else None


async def current_for_story(*, session: AsyncSession, story_id: str) -> DigestRecord | None:
    row = await session.scalar(
        select(DigestRow)
        .where(DigestRow.story_id == story_id, DigestRow.is_current)
        .execution_options(populate_existing=True)
    )
    return _record(row) if row is not None else None


async def find_by_cache_key(*, session: AsyncSession, cache_key: str) -> DigestRecord | None:
    """The newest digest built from exactly these inputs, current or not."""
    row = await session.scalar(
        select(DigestRow)
        .where(DigestRow.cache_key == cache_key)
        .order_by(DigestRow.created_at.desc(), DigestRow.id)
        .limit(1)
        .execution_options(populate_existing=True)
    )
    return _record(row) if row is not None else None
