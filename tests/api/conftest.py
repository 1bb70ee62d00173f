"""The API in process: ``create_app`` over a fresh database, the fault server as the model.

Each test gets SQLite under tmp_path; tests that take ``database_url`` run on PostgreSQL too, in a
database of this test run's own (``newsdigest_api_<pid>``: other runs on the same server cannot
empty it under us), emptied before each test and dropped at the end; skipped when no server answers.
The in-process worker polls fast and retries failed jobs at once, and the model client sends one
call at a time, so an article's key-facts answer is always asked for before its sentiment.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.engine import URL

from service.api import create_app
from service.settings import Settings
from service.store import db
from service.store.models import Base
from tests.conftest import no_postgres
from tests.fault_server import FaultServer, fault_server_fixture  # noqa: F401 - provides the fixture

API_KEY = "test-key"
POSTGRES_SERVER = os.environ.get("PYTEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")


async def _maintenance(url: URL, statement: str) -> None:
    conn = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username, password=url.password,
                                 database="postgres")
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_api_url() -> Iterator[str]:
    url = db.async_url(POSTGRES_SERVER).set(database=f"newsdigest_api_{os.getpid()}")
    try:
        asyncio.run(_maintenance(url, f'DROP DATABASE IF EXISTS "{url.database}"'))
        asyncio.run(_maintenance(url, f'CREATE DATABASE "{url.database}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        no_postgres(f"no PostgreSQL server for API tests at {url.render_as_string()}: {exc}")
    rendered = url.render_as_string(hide_password=False)
    db.upgrade(rendered)
    yield rendered
    asyncio.run(_maintenance(url, f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))


async def _empty(url: str) -> None:
    engine = db.make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {', '.join(t.name for t in Base.metadata.sorted_tables)} CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_api_url"))
    return f"sqlite+aiosqlite:///{tmp_path}/nd.db"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/nd.db"


@pytest.fixture
def settings_for(fault_server: FaultServer) -> Callable[..., Settings]:
    def build(database_url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url, "api_keys": [API_KEY], "llm_base_url": fault_server.base_url,
            "llm_api_key": "fault-key", "llm_mode": "json_object", "llm_model": "test-model",
            "llm_max_concurrency": 1, "llm_max_attempts": 2, "llm_retry_initial_wait_s": 0,
            "llm_retry_max_wait_s": 0, "migrate_on_start": True, "worker_poll_interval_s": 0.05,
            "job_retry_initial_wait_s": 0, "job_retry_max_wait_s": 0, "job_max_attempts": 2,
        }
        return Settings(**{**values, **overrides})

    return build


@dataclass
class Api:
    """The running app, a client holding the test key, and the model double it talks to."""

    app: FastAPI
    client: httpx.AsyncClient
    faults: FaultServer

    async def count(self, table: str) -> int:
        model = next(t for t in Base.metadata.sorted_tables if t.name == table)
        async with self.app.state.runtime.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(model)) or 0)

    async def counts(self) -> dict[str, int]:
        return {t.name: await self.count(t.name) for t in Base.metadata.sorted_tables}

    async def job(self, job_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """The job once it is done (fails the test after ``timeout`` seconds)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            view: dict[str, Any] = (await self.client.get(f"/v1/jobs/{job_id}")).json()
            if view["status"] in ("succeeded", "failed"):
                return view
            assert asyncio.get_running_loop().time() < deadline, f"job still {view['status']}: {view}"
            await asyncio.sleep(0.05)


async def open_api(settings: Settings, faults: FaultServer) -> AsyncIterator[Api]:
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                     headers={"Authorization": f"Bearer {API_KEY}"}) as client:
            yield Api(app, client, faults)


@pytest.fixture
async def api(sqlite_url: str, settings_for: Callable[..., Settings], fault_server: FaultServer) -> AsyncIterator[Api]:
    """The API on SQLite."""
    async for running in open_api(settings_for(sqlite_url), fault_server):
        yield running


@pytest.fixture
async def any_db_api(database_url: str, settings_for: Callable[..., Settings],
                     fault_server: FaultServer) -> AsyncIterator[Api]:
    """The API on SQLite and on PostgreSQL (emptied first: the database outlives the test)."""
    if database_url.startswith("postgresql"):
        await _empty(database_url)
    async for running in open_api(settings_for(database_url), fault_server):
        yield running
