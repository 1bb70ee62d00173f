"""Engines, sessions and migrations: the one place that knows SQLite from PostgreSQL by URL.

The schema belongs to Alembic alone. The service never creates tables itself: at start-up it
calls :func:`check_migrated` and refuses to run on a database that is behind, because a worker
writing to half a schema corrupts jobs more quietly than a clear error at boot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from service.errors import ConfigError

#: Next to this package, so migrations are found from an installed wheel and from any CWD.
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
# Long enough for a writer's transaction to finish, short enough that a stuck one surfaces.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def async_url(url: str | URL) -> URL:
    """The URL with its async driver: ``postgresql://`` and ``sqlite://`` work as written."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def make_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL, enforced foreign keys and a busy timeout per connection."""
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        _ensure_sqlite_dir(parsed)
    else:
        kwargs.setdefault("pool_pre_ping", True)
    engine = create_async_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # Records are built from rows before commit; expiring them afterwards would only cost reloads.
    return async_sessionmaker(engine, expire_on_commit=False)


def _ensure_sqlite_dir(url: URL) -> None:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets the API read while a worker writes; NORMAL is crash-safe in WAL mode.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def alembic_config(url: str | URL | None = None, *, connection: Connection | None = None) -> Config:
    """Alembic's config built in code: no alembic.ini and no CWD needed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.attributes["url"] = async_url(url).render_as_string(hide_password=False)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Migrate the database at ``url`` (``newsdigest db upgrade``). Not for a running event loop."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | URL, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


async def upgrade_engine(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate from inside an event loop (app start-up, tests), over one of the engine's connections."""
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(alembic_config(connection=sync), revision))


async def downgrade_engine(engine: AsyncEngine, revision: str = "base") -> None:
    """The way back, over one of the engine's connections (tests, a rollback from a running app)."""
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(alembic_config(connection=sync), revision))


def _heads(sync: Connection) -> tuple[set[str], set[str]]:
    script = ScriptDirectory.from_config(alembic_config())
    return set(MigrationContext.configure(sync).get_current_heads()), set(script.get_heads())


async def check_migrated(engine: AsyncEngine) -> None:
    """Raise ConfigError unless the database is exactly at this code's Alembic head."""
    async with engine.connect() as conn:
        current, heads = await conn.run_sync(_heads)
    if current == heads:
        return
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    unknown = sorted(current - known)
    if unknown:
        raise ConfigError(
            f"database is at revision {', '.join(unknown)}, which this version of newsdigest does not know: "
            "upgrade newsdigest"
        )
    raise ConfigError("database is not migrated: run `newsdigest db upgrade`")
