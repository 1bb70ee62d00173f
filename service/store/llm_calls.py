"""One row per model call, as simonw/llm logs them: the ledger of tokens, latency and retries.

Extractions and digests keep their calls inside their provenance too; these rows exist so cost
and failure rates can be summed with SQL over any period without parsing result JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import CallUsage
from service.store.models import LLMCall, new_id, utcnow

# A field added to CallUsage is stored once a revision adds its column, and not before.
_FIELDS = frozenset(CallUsage.model_fields) & frozenset(LLMCall.__table__.c.keys())


async def save_calls(
    *,
    session: AsyncSession,
    calls: Sequence[CallUsage],
    extraction_id: str | None = None,
    digest_id: str | None = None,
) -> int:
    """Store the calls behind one extraction or digest (or neither, for a failed run); returns how many.

    A digest's calls are saved after the digest row: the column is a foreign key.
    """
    if not calls:
        return 0
    now = utcnow()
    rows = [
        {
            "id": new_id(),
            "extraction_id": extraction_id,
            "digest_id": digest_id,
            # A microsecond apart: the calls' order (first try, then re-ask) survives, which ids cannot keep.
            "created_at": now + timedelta(microseconds=i),
            **call.model_dump(include=set(_FIELDS)),
        }
        for i, call in enumerate(calls)
    ]
    await session.execute(insert(LLMCall), rows)
    return len(rows)


async def list_calls(
    *, session: AsyncSession, extraction_id: str | None = None, digest_id: str | None = None
) -> list[CallUsage]:
    """The calls stored for an extraction or a digest, oldest first."""
    stmt = select(LLMCall).order_by(LLMCall.created_at, LLMCall.id)
    if extraction_id is not None:
        stmt = stmt.where(LLMCall.extraction_id == extraction_id)
    if digest_id is not None:
        stmt = stmt.where(LLMCall.digest_id == digest_id)
    rows = await session.scalars(stmt)
    return [CallUsage.model_validate({name: getattr(row, name) for name in _FIELDS}) for row in rows]
