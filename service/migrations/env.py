"""Alembic environment for newsdigest, SQLite and PostgreSQL alike.

The URL comes from ``config.attributes["url"]`` (set by ``service.store.db``), else
``NEWSDIGEST_DATABASE_URL``, else the default SQLite file. ``service.store.db.upgrade_engine``
hands over an open connection instead, because ``asyncio.run`` cannot nest inside a running loop.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, make_url, pool

from service.settings import Settings
from service.store.db import async_url, make_engine
from service.store.models import Base

config = context.config
target_metadata = Base.metadata

# Only the alembic CLI (with service/alembic.ini) configures logging; programmatic runs leave the
# application's logging alone.
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = (
        config.attributes.get("url")
        or os.environ.get("NEWSDIGEST_DATABASE_URL")
        or Settings().database_url
    )
    return async_url(url).render_as_string(hide_password=False)


def _configure(dialect: str, **kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite can alter almost nothing in place; batch mode rebuilds the table instead.
        render_as_batch=dialect == "sqlite",
        **kwargs,
    )


def run_migrations_offline() -> None:
    url = _url()
    _configure(make_url(url).get_backend_name(), url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    _configure(connection.dialect.name, connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = make_engine(_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
