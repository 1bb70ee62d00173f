"""The two spots where SQLite and PostgreSQL need different SQL for the same guarantee."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def dialect_name(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def insert(session: AsyncSession, entity: Any) -> postgresql.Insert | sqlite.Insert:
    """``INSERT`` with ``on_conflict_do_*``: both dialects spell the upsert the same way."""
    if dialect_name(session) == "postgresql":
        return postgresql.insert(entity)
    return sqlite.insert(entity)


async def lock(session: AsyncSession, name: str) -> None:
    """Serialise writers that share ``name`` until this transaction ends.

    On PostgreSQL, a transaction-scoped advisory lock: under READ COMMITTED two writers could both
    see "nothing there yet" and both insert. SQLite admits one writer at a time, and callers make
    their first write the check (``INSERT ... WHERE NOT EXISTS``, ``UPDATE``), so nothing is needed.
    """
    if dialect_name(session) == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(name, 0))))
