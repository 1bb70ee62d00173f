"""The app in process over a fresh database, the fault server as its model: the API and webhook tests' harness.

The in-process worker polls fast and retries failed jobs at once, and the model client sends one call
at a time, so an article's key-facts answer is always asked for before its sentiment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select

from service.api import create_app
from service.settings import Settings
from service.store.jobs import JobRecord, _record
from service.store.models import Base, Job
from tests.fake_openai import FaultServer
from tests.signing import event, signed

API_KEY = "test-key"


def app_settings(faults: FaultServer, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url, "api_keys": [API_KEY], "llm_base_url": faults.base_url,
        "llm_api_key": "fault-key", "llm_mode": "json_object", "llm_model": "test-model",
        "llm_max_concurrency": 1, "llm_max_attempts": 2, "llm_retry_initial_wait_s": 0,
        "llm_retry_max_wait_s": 0, "migrate_on_start": True, "worker_poll_interval_s": 0.05,
        "job_retry_initial_wait_s": 0, "job_retry_max_wait_s": 0, "job_max_attempts": 2,
    }
    return Settings(**{**values, **overrides})


@dataclass
class Api:
    """The running app, a client (holding the test key unless opened without), and the model double."""

    app: FastAPI
    client: httpx.AsyncClient
    faults: FaultServer

    async def count(self, table: str) -> int:
        return (await self.counts())[table]

    async def counts(self) -> dict[str, int]:
        async with self.app.state.runtime.sessions() as session:
            return {t.name: int(await session.scalar(select(func.count()).select_from(t)) or 0)
                    for t in Base.metadata.sorted_tables}

    async def job(self, job_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """The job's view once it is done (fails the test after ``timeout`` seconds)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            view: dict[str, Any] = (await self.client.get(f"/v1/jobs/{job_id}")).json()
            if view["status"] in ("succeeded", "failed"):
                return view
            assert asyncio.get_running_loop().time() < deadline, f"job still {view['status']}: {view}"
            await asyncio.sleep(0.05)

    async def jobs(self, kind: str | None = None) -> list[JobRecord]:
        stmt = select(Job).order_by(Job.created_at, Job.id)
        if kind is not None:
            stmt = stmt.where(Job.kind == kind)
        async with self.app.state.runtime.sessions() as session:
            return [_record(row) for row in await session.scalars(stmt)]

    async def settle(self, kind: str, count: int = 1, timeout: float = 20.0) -> list[JobRecord]:
        """Wait until ``count`` jobs of ``kind`` exist and all of them are done."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = await self.jobs(kind)
            if len(found) >= count and all(j.done for j in found):
                return found
            assert asyncio.get_running_loop().time() < deadline, f"{kind} jobs not done: {found}"
            await asyncio.sleep(0.05)


RunningApp = TypeVar("RunningApp", bound=Api)


async def open_app(settings: Settings, faults: FaultServer, kind: type[RunningApp], *,
                   api_key: str | None = API_KEY) -> AsyncIterator[RunningApp]:
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
            yield kind(app, client, faults)


async def open_api(settings: Settings, faults: FaultServer) -> AsyncIterator[Api]:
    async for running in open_app(settings, faults, Api):
        yield running


class Hooks(Api):
    """The running app, a client without the API key (the webhook route must not need one), the model double."""

    async def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return await self.client.post("/v1/webhooks/cms", content=body, headers=headers)

    async def send(self, kind: str, data: dict[str, Any], msg_id: str) -> httpx.Response:
        body = event(kind, data)
        return await self.post(body, signed(body, msg_id=msg_id))


async def open_hooks(settings: Settings, faults: FaultServer) -> AsyncIterator[Hooks]:
    async for running in open_app(settings, faults, Hooks, api_key=None):
        yield running
