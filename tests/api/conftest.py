"""The API in process: ``create_app`` over a fresh database, the fault server as the model.

Tests take ``sqlite_url`` or ``database_url`` (SQLite and PostgreSQL, from tests/databases.py).
The in-process worker polls fast and retries failed jobs at once, and the model client sends one
call at a time, so an article's key-facts answer is always asked for before its sentiment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select

from service.api import create_app
from service.settings import Settings
from service.store.models import Base
from tests.fake_openai import FaultServer

API_KEY = "test-key"


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
    """The API on SQLite and on PostgreSQL."""
    async for running in open_api(settings_for(database_url), fault_server):
        yield running
