"""Store tests run twice: on a SQLite file under tmp_path and on a real PostgreSQL server.

PostgreSQL comes from PYTEST_POSTGRES_URL (default: user postgres on 127.0.0.1, database
newsdigest_test, created when missing). Each test session migrates its own schema in that database
up with Alembic and back down at the end, so several test runs (a teammate's, CI's) can share the
server without truncating each other's tables; tables are emptied before each test. A schema
left by a run that crashed is dropped after a day. Without a server those tests are skipped.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.store import db
from service.store.models import Base
from tests.conftest import no_postgres

POSTGRES_URL = os.environ.get("PYTEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/newsdigest_test")
_SCHEMA_PREFIX = "pytest_"
_STALE_AFTER_S = 24 * 3600


@dataclass(frozen=True)
class Database:
    url: str
    engine_options: dict[str, Any] = field(default_factory=dict)

    def engine(self) -> AsyncEngine:
        return db.make_engine(self.url, **self.engine_options)


async def _connect(url: URL, database: str | None = None) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password,
        database=database or url.database,
    )


async def _prepare(url: URL, schema: str) -> None:
    admin = await _connect(url, "postgres")
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", url.database):
            await admin.execute(f'CREATE DATABASE "{url.database}"')
    finally:
        await admin.close()
    conn = await _connect(url)
    try:
        names = await conn.fetch("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", _SCHEMA_PREFIX)
        for (name,) in names:
            started = name.removeprefix(_SCHEMA_PREFIX).split("_")[0]
            if started.isdigit() and int(started) < time.time() - _STALE_AFTER_S:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()


async def _migrate(database: Database, revision: str) -> None:
    engine = database.engine()
    try:
        if revision == "base":
            await db.downgrade_engine(engine)
        else:
            await db.upgrade_engine(engine, revision)
    finally:
        await engine.dispose()


async def _drop_schema(url: URL, schema: str) -> None:
    conn = await _connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Database]:
    url = db.async_url(POSTGRES_URL)
    schema = f"{_SCHEMA_PREFIX}{int(time.time())}_{secrets.token_hex(4)}"
    try:
        asyncio.run(_prepare(url, schema))
    except (OSError, asyncpg.PostgresError) as exc:
        no_postgres(f"no PostgreSQL server for store tests at {url.render_as_string()}: {exc}")
    database = Database(
        url.render_as_string(hide_password=False),
        {"connect_args": {"server_settings": {"search_path": schema}}},
    )
    asyncio.run(_migrate(database, "head"))
    try:
        yield database
        asyncio.run(_migrate(database, "base"))
    finally:
        asyncio.run(_drop_schema(url, schema))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Database:
    """A migrated database: a fresh SQLite file, or this session's PostgreSQL schema."""
    if request.param == "postgresql":
        postgres: Database = request.getfixturevalue("postgres")
        return postgres
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'nd.db'}"
    db.upgrade(url)  # the synchronous path `newsdigest db upgrade` takes
    return Database(url)


@pytest.fixture
async def engine(database: Database) -> AsyncIterator[AsyncEngine]:
    engine = database.engine()
    if engine.dialect.name == "postgresql":
        tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db.make_sessionmaker(engine)
