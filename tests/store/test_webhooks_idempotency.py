from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.store import idempotency, webhooks
from service.store.models import utcnow


async def test_a_webhook_id_is_handled_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        assert await webhooks.record_delivery(session=session, webhook_id="msg_1", event_type="article.published")
    async with sessions.begin() as session:
        assert not await webhooks.record_delivery(session=session, webhook_id="msg_1", event_type="article.published")
        old = utcnow() - timedelta(days=10)
        assert await webhooks.record_delivery(session=session, webhook_id="msg_0", event_type="x", received_at=old)
    async with sessions.begin() as session:
        assert await webhooks.purge_deliveries(session=session, older_than=timedelta(days=7)) == 1
        assert await webhooks.record_delivery(session=session, webhook_id="msg_0", event_type="x")


async def test_a_rolled_back_delivery_is_not_remembered(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        assert await webhooks.record_delivery(session=session, webhook_id="msg_2", event_type="x")
        await session.rollback()
    async with sessions.begin() as session:
        assert await webhooks.record_delivery(session=session, webhook_id="msg_2", event_type="x")


async def test_idempotency_begin_and_complete(sessions: async_sessionmaker[AsyncSession]) -> None:
    key = {"key": "k1", "api_key_hash": "cms-a"}
    async with sessions.begin() as session:
        assert await idempotency.begin(session=session, request_hash="r1", **key) == idempotency.IdempotencyState("new")
    async with sessions.begin() as session:
        running = await idempotency.begin(session=session, request_hash="r1", **key)
        assert running == idempotency.IdempotencyState("processing")
        other_body = await idempotency.begin(session=session, request_hash="r2", **key)
        assert other_body.state == "processing" and other_body.conflict
        # Same key from another API key is another key.
        fresh = await idempotency.begin(session=session, key="k1", api_key_hash="cms-b", request_hash="r2")
        assert fresh.state == "new"
    body = {"job_id": "j1", "article_id": "a1"}
    async with sessions.begin() as session:
        await idempotency.complete(session=session, response_status=202, response_body=body, **key)
    async with sessions.begin() as session:
        replay = await idempotency.begin(session=session, request_hash="r1", **key)
        assert replay == idempotency.IdempotencyState("done", False, 202, body)
        mismatch = await idempotency.begin(session=session, request_hash="r2", **key)
        assert mismatch.state == "done" and mismatch.conflict


async def test_abandoned_and_released_keys_can_be_retried(sessions: async_sessionmaker[AsyncSession]) -> None:
    key = {"key": "k2", "api_key_hash": "cms-a", "request_hash": "r"}
    async with sessions.begin() as session:
        assert (await idempotency.begin(session=session, **key)).state == "new"
    async with sessions.begin() as session:
        later = utcnow() + timedelta(minutes=11)
        assert (await idempotency.begin(session=session, now=later, **key)).state == "new"  # taken over
        assert (await idempotency.begin(session=session, now=later, **key)).state == "processing"
        await idempotency.release(session=session, key="k2", api_key_hash="cms-a")
        assert (await idempotency.begin(session=session, **key)).state == "new"
    async with sessions.begin() as session:
        assert await idempotency.purge_keys(session=session, now=utcnow() + timedelta(days=2)) == 1


async def test_keys_in_flight_are_released_by_the_run_that_held_them(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions.begin() as session:
        for key, owner, run in [("a", "h/api", "1.x"), ("b", "h/api", "2.y"), ("c", "h/other", "1.x"),
                                ("d", "h/api", "1.x")]:
            state = await idempotency.begin(session=session, key=key, api_key_hash="cms", request_hash="r",
                                            owner=owner, run=run)
            assert state.state == "new"
        await idempotency.complete(session=session, key="d", api_key_hash="cms", response_status=202,
                                   response_body={})
    async with sessions.begin() as session:
        assert await idempotency.held_runs(session=session, owner="h/api") == {"1.x", "2.y"}  # "d" is answered
        assert await idempotency.release_runs(session=session, owner="h/api", runs=[]) == 0
        assert await idempotency.release_runs(session=session, owner="h/api", runs=["1.x"]) == 1
        states = {key: (await idempotency.begin(session=session, key=key, api_key_hash="cms", request_hash="r")).state
                  for key in "abcd"}
    assert states == {"a": "new", "b": "processing", "c": "processing", "d": "done"}
