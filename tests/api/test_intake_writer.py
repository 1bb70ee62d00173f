"""Group commit for the intake (service.api.intake.IntakeWriter): shared transactions, isolated failures."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.api.intake import Batch, IntakeWriter
from service.store import webhooks as deliveries
from service.store.models import WebhookDelivery

REQUEST = contextvars.ContextVar("request", default="none")


class CountingSessions:
    """The sessionmaker, counting the sessions (one per transaction) the writer opens."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.opened = 0

    def __call__(self) -> AsyncSession:
        self.opened += 1
        return self.sessions()


@pytest.fixture
def sessions(sessions: async_sessionmaker[AsyncSession]) -> CountingSessions:
    """The test database's sessions (tests/databases.py: SQLite and PostgreSQL), counted."""
    return CountingSessions(sessions)


async def _stored(sessions: CountingSessions) -> set[str]:
    async with sessions.sessions() as session:
        return set(await session.scalars(select(WebhookDelivery.webhook_id)))


def _delivery(webhook_id: str, seen: list[tuple[str, str]] | None = None) -> Any:
    async def work(batch: Batch) -> bool:
        if seen is not None:
            seen.append((webhook_id, REQUEST.get()))
        return await deliveries.record_delivery(session=batch.session, webhook_id=webhook_id, event_type="t")
    return work


async def _as_request(name: str, writer: IntakeWriter, work: Any) -> Any:
    REQUEST.set(name)  # each request task has its own context, as under the ASGI server
    return await writer.write(work)


async def test_concurrent_requests_share_transactions_and_each_gets_its_own_result(
        sessions: CountingSessions) -> None:
    writer = IntakeWriter(sessions)

    results = await asyncio.gather(*(_as_request(f"r{n}", writer, _delivery(f"msg_{n}")) for n in range(40)),
                                   _as_request("again", writer, _delivery("msg_0")))

    assert results == [True] * 40 + [False]  # the repeat, written after the first in the same batch, is a duplicate
    assert await _stored(sessions) == {f"msg_{n}" for n in range(40)}
    assert sessions.opened < 10  # 41 requests, a handful of transactions


async def test_a_lone_request_is_written_at_once(sessions: CountingSessions) -> None:
    writer = IntakeWriter(sessions)

    assert await asyncio.wait_for(writer.write(_delivery("msg_alone")), timeout=5) is True
    assert await _stored(sessions) == {"msg_alone"}


async def test_a_failing_request_fails_alone(sessions: CountingSessions) -> None:
    writer = IntakeWriter(sessions)

    async def broken(batch: Batch) -> None:
        await deliveries.record_delivery(session=batch.session, webhook_id="msg_broken", event_type="t")
        raise RuntimeError("this request's own problem")

    results = await asyncio.gather(*(_as_request(f"r{n}", writer, _delivery(f"msg_{n}")) for n in range(5)),
                                   _as_request("bad", writer, broken),
                                   *(_as_request(f"s{n}", writer, _delivery(f"msg_{n + 5}")) for n in range(5)),
                                   return_exceptions=True)

    assert [type(r).__name__ for r in results] == ["bool"] * 5 + ["RuntimeError"] + ["bool"] * 5
    assert await _stored(sessions) == {f"msg_{n}" for n in range(10)}  # nothing of the failed one


async def test_each_request_writes_in_its_own_context(sessions: CountingSessions) -> None:
    """Log fields and the trace of a request follow its writes, even inside another request's batch."""
    writer = IntakeWriter(sessions)
    seen: list[tuple[str, str]] = []

    await asyncio.gather(*(_as_request(f"request-{n}", writer, _delivery(f"msg_{n}", seen)) for n in range(10)))

    assert sorted(seen) == sorted((f"msg_{n}", f"request-{n}") for n in range(10))


async def test_a_cancelled_request_still_commits_its_writes(sessions: CountingSessions) -> None:
    """The 202 may never reach a client that went away, but what was accepted is stored (the CMS retries
    and finds it a duplicate), never half of it."""
    writer = IntakeWriter(sessions)
    slow_started = asyncio.Event()

    async def slow(batch: Batch) -> bool:
        slow_started.set()
        await asyncio.sleep(0.2)
        return await deliveries.record_delivery(session=batch.session, webhook_id="msg_slow", event_type="t")

    first = asyncio.create_task(writer.write(slow))
    await slow_started.wait()
    gone = asyncio.create_task(writer.write(_delivery("msg_gone")))
    await asyncio.sleep(0)
    gone.cancel()
    assert await first is True
    await asyncio.sleep(0.3)

    assert await _stored(sessions) == {"msg_slow", "msg_gone"}
    async with sessions.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(WebhookDelivery)) == 2
