"""Job kinds and statuses through the queue and the table: what goes in as an enum comes back as one."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.jobs.queue import DatabaseJobQueue
from service.store import jobs
from service.store.jobs import JobKind, JobStatus
from service.store.models import Job


@pytest.mark.parametrize("kind", list(JobKind))
async def test_a_job_comes_back_as_the_kind_it_was_queued_as(
    kind: JobKind, queue: DatabaseJobQueue, sessions: async_sessionmaker[AsyncSession],
) -> None:
    submitted = await queue.submit(kind, {"n": 1})
    read = await queue.get(submitted.id)
    assert read is not None
    assert type(read.kind) is JobKind and read.kind is kind
    assert type(read.status) is JobStatus and read.status is JobStatus.QUEUED
    async with sessions.begin() as session:
        claimed = await jobs.claim_next(session=session, worker_id="w", kinds=[kind])
        assert claimed is not None and claimed.kind is kind and claimed.status is JobStatus.RUNNING
        done = await jobs.finish(session=session, job_id=submitted.id, result={}, worker_id="w")
    assert done is not None and done.kind is kind and done.status is JobStatus.SUCCEEDED
    async with sessions() as session:
        assert [j.kind for j in await jobs.list_jobs(session=session, kind=kind)] == [kind]


async def test_a_kind_given_as_its_value_is_stored_as_the_kind(queue: DatabaseJobQueue) -> None:
    submitted = await queue.submit("build_digest", {})
    assert submitted.kind is JobKind.BUILD_DIGEST
    with pytest.raises(ValueError, match="unknown job kind 'mine_bitcoin'"):
        await queue.submit("mine_bitcoin", {})


async def test_a_kind_this_release_does_not_know_still_loads(
    queue: DatabaseJobQueue, sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A newer release may queue kinds this one lacks: the row loads with its kind as a plain string."""
    submitted = await queue.submit(JobKind.SEND_CALLBACK, {})
    async with sessions.begin() as session:
        await session.execute(update(Job).where(Job.id == submitted.id).values(kind="translate_digest"))
    read = await queue.get(submitted.id)
    assert read is not None and read.kind == "translate_digest" and not isinstance(read.kind, JobKind)
    async with sessions.begin() as session:  # and a worker that only takes the kinds it knows leaves it
        assert await jobs.claim_next(session=session, worker_id="w", kinds=list(JobKind)) is None
