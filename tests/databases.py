"""The test databases, one set for every folder (a plugin: ``pytest_plugins`` in tests/conftest.py).

``database_url`` runs a test twice: on SQLite and on PostgreSQL (marked ``postgres``). Both are
migrated with Alembic the way ``newsdigest db upgrade`` does it, once per session, into a template:

- SQLite: the test gets its own copy of the migrated file, under its ``tmp_path``;
- PostgreSQL: the session's own database (``newsdigest_test_<started>_<pid>``, cloned from the
  template ``..._tpl``), emptied before each test, migrated back down and dropped at the end, so
  several runs (a teammate's, CI's) share the server without touching each other's rows. A test
  that needs a database nobody else touches (real worker processes, the job engine's schemas)
  asks for ``OWN_POSTGRES`` and gets a clone of the template, dropped after it. Databases left by
  a run that crashed are dropped after a day.

``@only_on(POSTGRES)`` (or ``OWN_POSTGRES``, ``SQLITE``) narrows a test to some of them;
``engine`` and ``sessions`` open the test's database. The server is ``PYTEST_POSTGRES_URL``
(default user postgres on 127.0.0.1:5432); without one, PostgreSQL tests are skipped, and they
fail under ``PYTEST_REQUIRE_POSTGRES=1`` (CI), so a server that did not start cannot pass as skips.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.store import db
from service.store.models import Base

SQLITE = "sqlite"
POSTGRES = "postgresql"
OWN_POSTGRES = "postgresql-own"

POSTGRES_SERVER = os.environ.get("PYTEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
_PREFIX = "newsdigest_test_"
_STALE_AFTER_S = 24 * 3600
_clones = itertools.count(1)
T = TypeVar("T")


def no_postgres(reason: str) -> None:
    """Skip a PostgreSQL test on a machine without the server; fail it where one is promised (CI sets
    PYTEST_REQUIRE_POSTGRES=1), so a server that did not start cannot pass as skipped tests."""
    if os.environ.get("PYTEST_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PYTEST_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


def _param(kind: str) -> Any:
    return pytest.param(kind, marks=pytest.mark.postgres) if kind != SQLITE else kind


#: ``database_url``'s parameters: every test that takes it runs on both.
DATABASES = [_param(SQLITE), _param(POSTGRES)]


def only_on(*kinds: str) -> pytest.MarkDecorator:
    """Run a test that takes ``database_url`` on these kinds only (a PostgreSQL one is marked ``postgres``)."""
    return pytest.mark.parametrize("database_url", [_param(kind) for kind in kinds], indirect=True)


# --- off the test's event loop ---------------------------------------------------------------------


def _in_thread(work: Callable[..., T], *args: Any) -> T:
    """Run ``work`` in a thread of its own: these fixtures are also reached from async tests, and
    ``asyncio.run`` (here, or inside Alembic) must neither nest in nor replace the test's event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work, *args).result()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    return _in_thread(asyncio.run, coroutine)


def _rendered(url: URL) -> str:
    return url.render_as_string(hide_password=False)


async def _connect(database: str | None = None) -> asyncpg.Connection:
    """A plain connection to the server's maintenance database, or to ``database``."""
    url = db.async_url(POSTGRES_SERVER)
    return await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username, password=url.password,
                                 database=database or url.database or "postgres")


async def _on_server(*statements: str, drop_stale: bool = False) -> None:
    conn = await _connect()
    try:
        ours = "SELECT datname FROM pg_database WHERE starts_with(datname, $1)"
        for (name,) in await conn.fetch(ours, _PREFIX) if drop_stale else []:
            started = name.removeprefix(_PREFIX).split("_")[0]
            if started.isdigit() and int(started) < time.time() - _STALE_AFTER_S:  # a crashed run's
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _clone(template: URL, suffix: str) -> str:
    url = template.set(database=f"{template.database.removesuffix('_tpl')}{suffix}")
    _run(_on_server(f'CREATE DATABASE "{url.database}" TEMPLATE "{template.database}"'))
    return _rendered(url)


def _drop(url: str | URL) -> None:
    _run(_on_server(f'DROP DATABASE IF EXISTS "{db.async_url(url).database}" WITH (FORCE)'))


async def _empty(url: str) -> None:
    """Every row of newsdigest's tables and of the shared rate window goes; the schema stays."""
    # DELETE, children first: on tables of a few rows it takes a fraction of TRUNCATE's time.
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)] + ["coordination.llm_rate_window"]
    conn = await _connect(db.async_url(url).database)
    try:
        async with conn.transaction():
            for table in tables:
                await conn.execute(f"DELETE FROM {table}")
    finally:
        await conn.close()


# --- the session's migrated templates --------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once for the session; tests get copies."""
    path = tmp_path_factory.mktemp("sqlite-template") / "nd.db"
    _in_thread(db.upgrade, f"sqlite:///{path}")  # the synchronous path `newsdigest db upgrade` takes
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")  # one file to copy; the service turns WAL on again
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[URL]:
    """A PostgreSQL database migrated once for the session, never connected to again: each
    PostgreSQL database of the run is created from it."""
    server = db.async_url(POSTGRES_SERVER)
    template = server.set(database=f"{_PREFIX}{int(time.time())}_{os.getpid()}_tpl")
    try:
        _run(_on_server(f'CREATE DATABASE "{template.database}"', drop_stale=True))
    except (OSError, asyncpg.PostgresError) as exc:
        no_postgres(f"no PostgreSQL server at {server.render_as_string()}: {exc}")
    try:
        _in_thread(db.upgrade, _rendered(template))
        yield template
    finally:
        _drop(template)


@pytest.fixture(scope="session")
def postgres_database(postgres_template: URL) -> Iterator[str]:
    """The session's shared PostgreSQL database; ``database_url`` empties it before each test."""
    url = _clone(postgres_template, "")
    try:
        yield url
        # Every revision's way back, over the rows the last test left.
        _in_thread(db.downgrade, url, "base")
    finally:
        _drop(url)


# --- what tests take -----------------------------------------------------------------------------------


def sqlite_copy(template: Path, directory: Path) -> str:
    path = directory / "nd.db"
    shutil.copyfile(template, path)
    return f"sqlite+aiosqlite:///{path}"


def open_database(request: pytest.FixtureRequest, kind: str, directory: Path) -> str:
    """A migrated database of ``kind`` for a fixture of any scope; SQLite's file goes into ``directory``,
    a database of its own is dropped when the fixture's scope ends."""
    if kind == SQLITE:
        return sqlite_copy(request.getfixturevalue("sqlite_template"), directory)
    if kind == POSTGRES:
        url: str = request.getfixturevalue("postgres_database")
        _run(_empty(url))
        return url
    own = _clone(request.getfixturevalue("postgres_template"), f"_{next(_clones)}")
    request.addfinalizer(lambda: _drop(own))
    return own


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated SQLite database of this test's own."""
    return open_database(request, SQLITE, tmp_path)


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: SQLite, then PostgreSQL (see ``only_on``)."""
    return open_database(request, request.param, tmp_path)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = db.make_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db.make_sessionmaker(engine)
