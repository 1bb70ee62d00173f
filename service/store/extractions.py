"""The extraction cache: one stored analysis per (text, prompt versions, model, mode).

The key covers everything that can change the model's answer and nothing else, so the same
article sent twice, or the same wire story printed by two outlets, costs no second LLM call,
while a new prompt version, model or output mode always gets a fresh analysis.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import Extraction
from service.store import _dialect
from service.store.articles import ArticleRecord
from service.store.models import Extraction as ExtractionRow
from service.store.models import new_id, utcnow

# Bump when the key's recipe changes, so old rows can never be mistaken for new ones.
_KEY_VERSION = 1


def cache_key(*, content_hash: str, prompts: Mapping[str, str], model: str, mode: str) -> str:
    """sha256 over the text's hash, every ``name@version`` with its file hash, model and mode.

    ``prompts`` maps ``"key_facts@2"`` to that prompt file's sha256; their order does not matter.
    """
    material = {
        "v": _KEY_VERSION,
        "content_hash": content_hash,
        "prompts": sorted(prompts.items()),
        "model": model,
        "mode": mode,
    }
    return hashlib.sha256(json.dumps(material, separators=(",", ":")).encode()).hexdigest()


async def get_cached(*, session: AsyncSession, cache_key: str) -> Extraction | None:
    """The stored analysis for this key, or None.

    ``article`` in the result is the article that paid for it; an article with the same text
    should swap in its own ``ArticleRecord.ref()``.
    """
    result = await session.scalar(select(ExtractionRow.result).where(ExtractionRow.cache_key == cache_key))
    return Extraction.model_validate(result) if result is not None else None


async def save_extraction(
    *,
    session: AsyncSession,
    article_id: str,
    cache_key: str,
    prompts: Mapping[str, str],
    model: str,
    mode: str,
    extraction: Extraction,
) -> str:
    """Store a complete analysis and return its id.

    Save only results without a prompt ``error``: a cached failure would be served forever. When
    another worker stored the same key first, its row wins and its id is returned, so the caller
    can still attach its own LLM calls (they were paid for) to it.
    """
    stmt = (
        _dialect.insert(session, ExtractionRow)
        .values(
            id=new_id(),
            article_id=article_id,
            content_hash=extraction.article.content_hash,
            cache_key=cache_key,
            prompts=dict(prompts),
            model=model,
            mode=mode,
            result=extraction.model_dump(mode="json"),
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=[ExtractionRow.cache_key])
        .returning(ExtractionRow.id)
    )
    inserted = await session.scalar(stmt)
    if inserted is not None:
        return inserted
    existing = await session.scalars(select(ExtractionRow.id).where(ExtractionRow.cache_key == cache_key))
    return existing.one()


async def latest_for_article(*, session: AsyncSession, article: ArticleRecord) -> Extraction | None:
    """The newest analysis of this article's current text, cited as this article.

    Looked up by content hash, so it also finds an analysis made for another article with the
    same text, and never one of the article's text before an update.
    """
    result = await session.scalar(
        select(ExtractionRow.result)
        .where(ExtractionRow.content_hash == article.prepared.content_hash)
        .order_by(ExtractionRow.created_at.desc(), ExtractionRow.id)
        .limit(1)
    )
    if result is None:
        return None
    return Extraction.model_validate(result).model_copy(update={"article": article.ref()})
