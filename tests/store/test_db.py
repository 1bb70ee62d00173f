from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.errors import ConfigError
from service.store import db, engine_jobs
from service.store.models import Base
from tests.databases import POSTGRES, only_on


def _diff(sync: Connection) -> list[object]:
    context = MigrationContext.configure(sync, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_migrated_to_head_and_matching_the_models(engine: AsyncEngine) -> None:
    await db.check_migrated(engine)
    async with engine.connect() as conn:
        assert await conn.run_sync(_diff) == []


def _check_names(sync: Connection) -> dict[str, set[str]]:
    inspector = inspect(sync)
    tables = ("jobs", "idempotency_keys")
    return {table: {c["name"] for c in inspector.get_check_constraints(table)} for table in tables}


async def test_check_constraints_are_named_as_in_the_models(engine: AsyncEngine) -> None:
    """compare_metadata does not look at CHECK constraints; a later revision must find them by name."""
    async with engine.connect() as conn:
        names = await conn.run_sync(_check_names)
    assert names == {"jobs": {"ck_jobs_status"}, "idempotency_keys": {"ck_idempotency_keys_status"}}


async def test_check_migrated_raises_on_an_empty_database(engine: AsyncEngine) -> None:
    await db.downgrade_engine(engine)
    try:
        with pytest.raises(ConfigError, match=r"database is not migrated: run `newsdigest db upgrade`"):
            await db.check_migrated(engine)
    finally:
        await db.upgrade_engine(engine)
    await db.check_migrated(engine)


async def test_check_migrated_raises_on_a_database_from_a_newer_release(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        head = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    try:
        with pytest.raises(ConfigError, match="9999_future"):
            await db.check_migrated(engine)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})


@only_on(POSTGRES)
async def test_migrations_run_up_and_down_in_a_schema_of_their_own(database_url: str) -> None:
    """Revision 0002 names the job engine's schemas after newsdigest's: a deployment in schema ``X``
    gets ``X_procrastinate`` and ``X_coordination``, and the way back removes them again."""
    schema = "pytest_app"
    engine = db.make_engine(database_url, connect_args={"server_settings": {"search_path": schema}})
    ours = text("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, :schema)")
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await db.upgrade_engine(engine)
        await db.check_migrated(engine)
        async with db.make_sessionmaker(engine)() as session:
            assert await engine_jobs.engine_schemas(session) == engine_jobs.EngineSchemas(
                f"{schema}_procrastinate", f"{schema}_coordination")
            assert set(await session.scalars(ours, {"schema": schema})) == {
                schema, f"{schema}_procrastinate", f"{schema}_coordination"}
        await db.downgrade_engine(engine)
        async with engine.connect() as conn:
            assert set(await conn.scalars(ours, {"schema": schema})) == {schema}
            tables = text("SELECT tablename FROM pg_tables WHERE schemaname = :schema")
            assert set(await conn.scalars(tables, {"schema": schema})) == {"alembic_version"}
    finally:
        async with engine.begin() as conn:
            for name in (schema, f"{schema}_procrastinate", f"{schema}_coordination"):
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        await engine.dispose()


async def test_sqlite_connections_get_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/sub/dir/nd.db")  # plain URL, missing folders
    try:
        async with engine.connect() as conn:
            pragmas = [(await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                       for name in ("journal_mode", "foreign_keys", "busy_timeout")]
        assert pragmas == ["wal", 1, db.SQLITE_BUSY_TIMEOUT_MS]
        assert engine.url.drivername == "sqlite+aiosqlite"
    finally:
        await engine.dispose()


def test_upgrade_runs_from_any_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/cli.db"
    db.upgrade(url)

    async def check() -> None:
        engine = db.make_engine(url)
        try:
            await db.check_migrated(engine)
        finally:
            await engine.dispose()

    asyncio.run(check())
