"""The articles of a group-committed batch written together (service.api.intake.ArticleArrival.write_together)
store and answer exactly what writing them one after another does, on both databases.

Every other test sends its requests one at a time, so only this one reaches the bulk path.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas import ArticleIn
from service.api.intake import Arrived, ArticleArrival, Batch, IntakeWriter
from service.jobs.queue import DatabaseJobQueue
from service.settings import Settings

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _article(n: int, story: str | None, body: str = "The council met on Monday and voted 7 to 2.", *,
             cms: bool = True, published: datetime | None = None) -> ArticleIn:
    data: dict[str, Any] = {"outlet": "Outlet", "title": f"Title {n}", "body": body, "story_id": story,
                            "published_at": published}
    if cms:
        data["id"] = f"cms-{n}"
    return ArticleIn.model_validate(data)


def _arrivals(queue: DatabaseJobQueue, settings: Settings) -> list[ArticleArrival]:
    def hook(article: ArticleIn, webhook_id: str) -> ArticleArrival:
        return ArticleArrival(article, queue, settings, delivery=(webhook_id, "article.published"), refresh=True)

    moved = "The council changed its mind on Tuesday: 5 to 4."
    return [
        hook(_article(1, "s1", published=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=3)))), "m1"),
        hook(_article(2, "s1"), "m2"),  # stored before in story s0: leaves it
        hook(_article(1, "s2", moved), "m3"),  # the same article again, changed and moved to another story
        hook(_article(3, None), "m1"),  # a delivery seen earlier in the batch: a duplicate
        ArticleArrival(_article(4, "s3", cms=False), queue, settings, pins=["key_facts@1"]),  # POST /v1/articles
        ArticleArrival(_article(5, "s3"), queue, settings),  # stored before: its queued analysis is joined
        hook(_article(1, "s2", moved), "m4"),  # the same text again: joins the analysis queued above
        hook(_article(6, None), "m5"),  # no story, nothing to refresh
        hook(_article(7, "s1", published=datetime(2026, 5, 1)), "m6"),
        hook(_article(8, "s4"), "m0"),  # a delivery recorded before the batch
    ]


async def _written(sessions: async_sessionmaker[AsyncSession], together: bool) -> tuple[list[Any], dict[str, Any]]:
    settings = Settings(llm_base_url="http://127.0.0.1:9/v1", llm_api_key="unused")
    queue = DatabaseJobQueue(sessions, max_attempts=settings.job_max_attempts)
    async with sessions() as session, session.begin():
        before = Batch(session)
        await ArticleArrival(_article(2, "s0"), queue, settings, delivery=("m0", "article.published"),
                             refresh=True)(before)
        await ArticleArrival(_article(5, "s3"), queue, settings)(before)
    arrivals = _arrivals(queue, settings)
    async with sessions() as session, session.begin():
        batch = Batch(session)
        if together:
            results = await ArticleArrival.write_together(batch, arrivals,
                                                          [contextvars.copy_context() for _ in arrivals])
        else:
            results = [await arrival(batch) for arrival in arrivals]
    tables = {}
    async with sessions() as session:
        for table, columns, order in (
                ("webhook_deliveries", "webhook_id, event_type", "webhook_id"),
                ("articles", "id, cms_id, story_id, outlet, title, url, published_at, language, content_hash, text, "
                             "sentences, preparation, preparation_error, body, content_type, source_hash, deleted_at",
                 "created_at"),
                ("jobs", "id, kind, payload, status, attempts, max_attempts, dedupe_key, locked_by, error, result",
                 "created_at")):
            rows = await session.execute(text(f"SELECT {columns} FROM {table} ORDER BY {order}"))
            tables[table] = [list(row) for row in rows]
    return [_answer(r) for r in results], tables


def _answer(arrived: Arrived) -> Any:
    record, job = arrived.record, arrived.analysis
    return (arrived.fresh, record and (record.id, record.cms_id, record.story_id, record.source_hash,
                                       record.preparation, record.replaced_story_id),
            job and (job.id, job.kind, job.payload, job.status, job.dedupe_key, job.max_attempts, job.attempts),
            arrived.refreshes)


def _renamed(value: Any) -> Any:
    """Ids (uuid4, different in each run) renamed in order of first appearance."""
    names: dict[str, str] = {}

    def rename(v: Any) -> Any:
        if isinstance(v, str):
            return _ID.sub(lambda m: names.setdefault(m.group(0), f"<id {len(names)}>"), v)
        if isinstance(v, (list, tuple)):
            return [rename(x) for x in v]
        if isinstance(v, dict):
            return {k: rename(x) for k, x in v.items()}
        return v

    return rename(value)


async def test_a_batch_written_together_is_a_batch_written_one_after_another(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    alone = await _written(sessions, together=False)
    async with sessions() as session, session.begin():
        for table in ("jobs", "articles", "webhook_deliveries"):
            await session.execute(text(f"DELETE FROM {table}"))

    together = await _written(sessions, together=True)

    assert _renamed(together) == _renamed(alone)
    answers = _renamed(together)[0]
    assert [fresh for fresh, *_ in answers] == [True, True, True, False, True, True, True, True, True, False]
    assert answers[1][1][5] == "s0"  # the story article 2 left is named, so its digest drops it
    assert answers[6][2][0] == answers[2][2][0]  # the same text again joins the queued analysis


async def test_concurrent_arrivals_share_statements_and_each_gets_its_own_answer(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    settings = Settings(llm_base_url="http://127.0.0.1:9/v1", llm_api_key="unused")
    queue = DatabaseJobQueue(sessions, max_attempts=settings.job_max_attempts)
    writer = IntakeWriter(sessions)

    async def arrive(n: int, webhook_id: str) -> Arrived:
        return await writer.write(ArticleArrival(_article(n, f"s{n % 3}"), queue, settings,
                                                 delivery=(webhook_id, "article.published"), refresh=True))

    answers = await asyncio.gather(*(arrive(n, f"m{n}") for n in range(40)), arrive(0, "m0"))

    assert [a.fresh for a in answers] == [True] * 40 + [False]
    assert len({a.record.id for a in answers[:40] if a.record}) == 40
    assert len({a.analysis.id for a in answers[:40] if a.analysis}) == 40
    assert {len({r for a in answers[:40] for r in a.refreshes})} == {3}  # one refresh per story, joined by all
    async with sessions() as session:
        counts = {t: await session.scalar(text(f"SELECT count(*) FROM {t}"))
                  for t in ("webhook_deliveries", "articles", "jobs")}
        queued = {row.id: row.payload for row in await session.execute(text("SELECT id, payload FROM jobs"))}
    assert counts == {"webhook_deliveries": 40, "articles": 40, "jobs": 43}
    for a in answers[:40]:  # each request's analysis job, stored, for its own article
        assert a.record is not None and a.analysis is not None
        assert a.analysis.payload["article_id"] == a.record.id
        assert a.analysis.id in queued
