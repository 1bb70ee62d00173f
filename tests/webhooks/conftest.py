"""CMS webhooks in process: the app over a fresh database, signed by an independent implementation.

Signatures are computed here from the Standard Webhooks definition (HMAC-SHA256 over
``{id}.{timestamp}.{body}`` with the base64-decoded secret after ``whsec_``), never with the
library the service verifies with, so a bug shared by both sides cannot pass unnoticed.
The model is the fault server (answers from ``tests.factories``); the worker polls fast and
retries at once. Tests take ``sqlite_url`` or ``database_url`` (tests/databases.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
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
from service.store.jobs import JobRecord, _record
from service.store.models import Base, Job
from tests.fake_openai import FaultServer

SECRET = "whsec_" + base64.b64encode(b"newsdigest-webhook-test-secret!!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"an-old-or-wrong-secret-of-32-byt").decode()
CALLBACK_SECRET = "whsec_" + base64.b64encode(b"the-cms-callback-secret-32-bytes").decode()
API_KEY = "test-key"


def sign(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` written from the spec, not from the library."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed(body: bytes, *, secret: str = SECRET, msg_id: str = "msg_1", timestamp: int | None = None,
           signature: str | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": signature or sign(secret, msg_id, ts, body)}


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiving side of the same definition (the CMS stub uses it)."""
    expected = sign(secret, headers["webhook-id"], headers["webhook-timestamp"], body).split(",", 1)[1]
    given = [s.split(",", 1)[1] for s in headers["webhook-signature"].split(" ") if s.startswith("v1,")]
    fresh = abs(time.time() - int(headers["webhook-timestamp"])) <= 300
    return fresh and any(hmac.compare_digest(expected, g) for g in given)


def event(kind: str, data: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "timestamp": "2025-01-01T10:00:00Z", "data": data}).encode()


@dataclass
class Hooks:
    """The running app, a client (no API key: the webhook route must not need one) and the model double."""

    app: FastAPI
    client: httpx.AsyncClient
    faults: FaultServer

    async def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return await self.client.post("/v1/webhooks/cms", content=body, headers=headers)

    async def send(self, kind: str, data: dict[str, Any], msg_id: str) -> httpx.Response:
        body = event(kind, data)
        return await self.post(body, signed(body, msg_id=msg_id))

    async def counts(self) -> dict[str, int]:
        async with self.app.state.runtime.sessions() as session:
            return {t.name: int(await session.scalar(select(func.count()).select_from(t)) or 0)
                    for t in Base.metadata.sorted_tables}

    async def jobs(self, kind: str | None = None) -> list[JobRecord]:
        stmt = select(Job).order_by(Job.created_at, Job.id)
        if kind is not None:
            stmt = stmt.where(Job.kind == kind)
        async with self.app.state.runtime.sessions() as session:
            return [_record(row) for row in await session.scalars(stmt)]

    async def settle(self, kind: str, count: int = 1, timeout: float = 20.0) -> list[JobRecord]:
        """Wait until ``count`` jobs of ``kind`` exist and all of them are done."""
        deadline = time.monotonic() + timeout
        while True:
            found = await self.jobs(kind)
            if len(found) >= count and all(j.done for j in found):
                return found
            assert time.monotonic() < deadline, f"{kind} jobs not done: {found}"
            await asyncio.sleep(0.05)


@pytest.fixture
def hook_settings(fault_server: FaultServer) -> Callable[..., Settings]:
    def build(database_url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url, "api_keys": [API_KEY], "webhook_secret": SECRET,
            "llm_base_url": fault_server.base_url, "llm_api_key": "fault-key", "llm_mode": "json_object",
            "llm_model": "test-model", "llm_max_concurrency": 1, "llm_max_attempts": 2,
            "llm_retry_initial_wait_s": 0, "llm_retry_max_wait_s": 0, "migrate_on_start": True,
            "worker_poll_interval_s": 0.05, "job_retry_initial_wait_s": 0, "job_retry_max_wait_s": 0,
            "job_max_attempts": 2, "story_refresh_delay_s": 0.3, "story_refresh_busy_retry_s": 0.2,
        }
        return Settings(**{**values, **overrides})

    return build


async def open_hooks(settings: Settings, faults: FaultServer) -> AsyncIterator[Hooks]:
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Hooks(app, client, faults)


@pytest.fixture
async def idle_hooks(sqlite_url: str, hook_settings: Callable[..., Settings],
                     fault_server: FaultServer) -> AsyncIterator[Hooks]:
    """No worker: jobs stay queued, so a test sees exactly what the route wrote (and no model call)."""
    async for running in open_hooks(hook_settings(sqlite_url, run_worker=False), fault_server):
        yield running


@pytest.fixture
async def any_db_idle_hooks(database_url: str, hook_settings: Callable[..., Settings],
                            fault_server: FaultServer) -> AsyncIterator[Hooks]:
    async for running in open_hooks(hook_settings(database_url, run_worker=False), fault_server):
        yield running
