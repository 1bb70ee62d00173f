"""Scale-out tests: real ``newsdigest worker`` processes on the procrastinate backend and PostgreSQL.

Each test that runs workers gets a database of its own (``only_on(OWN_POSTGRES)``, a copy of the
session's migrated template), so its workers, jobs and rate window never meet another test's. The
model is the fault server answering every call with valid computed answers after a fixed delay
(``answering``); it notes every request as it arrives, so a call of a worker killed mid-call is on
record too. Skipped without a PostgreSQL server or without procrastinate (``pip install -e '.[scale]'``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas import ArticleIn
from service.pipeline.text import prepare
from service.settings import Settings
from service.store import articles, jobs
from service.store.articles import ArticleRecord
from tests.fake_openai import FaultServer
from tests.processes import NEWSDIGEST


def answering(server: FaultServer, delay_s: float) -> FaultServer:
    """The fault server answering every call with two valid facts (or sentiment, or a digest) after ``delay_s``."""
    server.compute(delay_s=delay_s, facts=2)
    return server


def worker_env(database_url: str, stub: FaultServer, **overrides: Any) -> dict[str, str]:
    values: dict[str, Any] = {
        "DATABASE_URL": database_url, "JOB_BACKEND": "procrastinate",
        "LLM_BASE_URL": stub.base_url, "LLM_API_KEY": "stub-key", "LLM_MODE": "json_object", "LLM_MODEL": "stub",
        "LLM_RETRY_INITIAL_WAIT_S": 0, "LLM_RETRY_MAX_WAIT_S": 0, "JOB_RETRY_INITIAL_WAIT_S": 0,
        "JOB_RETRY_MAX_WAIT_S": 0, "WORKER_POLL_INTERVAL_S": 0.2, "WORKER_CONCURRENCY": 2,
        "JOB_LOCK_TIMEOUT_S": 4, "WORKER_SHUTDOWN_GRACE_S": 2, "LOG_LEVEL": "info",
        # Several workers on one host: no metrics port each (the default 9464 would be taken by the first).
        "WORKER_METRICS_PORT": 0,
    }
    values.update({k.upper(): v for k, v in overrides.items()})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSDIGEST_", "OPENAI_"))}
    env.update({f"NEWSDIGEST_{k}": str(v) for k, v in values.items()})
    return env


@dataclass
class Workers:
    """``newsdigest worker`` processes; whatever is still running at the end is stopped."""

    log_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"worker-{len(self.procs)}.log").open("wb") as log:
            proc = subprocess.Popen([str(NEWSDIGEST), "worker", *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                         for p in sorted(self.log_dir.glob("worker-*.log")))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    running = Workers(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def article_in(n: int, story_id: str | None = None) -> ArticleIn:
    body = (f"The council of Town{n} approved a budget of {n} million euros on Monday. "
            f"The mayor of Town{n} said schools get most of the money. Critics in Town{n} called the plan rushed.")
    return ArticleIn(outlet=f"Outlet {n}", title=f"Town{n} budget", body=body, story_id=story_id, language="en")


def first_line(n: int) -> str:
    """The first line of the model prompt for article ``n`` (how the stub tells articles apart)."""
    return f"ARTICLE from Outlet {n}: Town{n} budget"


async def add_articles(sessions: async_sessionmaker[AsyncSession], numbers: range, *,
                       story_id: str | None = None, analyse: bool = True) -> list[ArticleRecord]:
    """Store articles and, with ``analyse``, queue one analysis job for each in the same transaction."""
    stored = []
    async with sessions() as session, session.begin():
        for n in numbers:
            record = await articles.save_article(session=session, prepared=prepare(article_in(n, story_id),
                                                                                  max_chars=100_000))
            if analyse:
                await jobs.enqueue(session=session, kind=jobs.JobKind.ANALYZE_ARTICLE,
                                   payload={"article_id": record.id, "pins": []}, max_attempts=3)
            stored.append(record)
    return stored


async def all_jobs(sessions: async_sessionmaker[AsyncSession]) -> list[jobs.JobRecord]:
    async with sessions() as session:
        ids = (await session.scalars(text("SELECT id FROM jobs ORDER BY created_at, id"))).all()
        found = [await jobs.get_job(session=session, job_id=i) for i in ids]
    return [j for j in found if j is not None]


async def wait_until_done(sessions: async_sessionmaker[AsyncSession], count: int, workers: Workers,
                          timeout: float = 60.0) -> list[jobs.JobRecord]:
    """Every job once ``count`` of them are done (fails with the workers' logs after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await all_jobs(sessions)
        if len(found) >= count and all(j.done for j in found):
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"jobs not done after {timeout:g} s: {[(j.kind, j.status) for j in found]}\n{workers.logs()}")
        await asyncio.sleep(0.2)


async def wait_for_engine_workers(sessions: async_sessionmaker[AsyncSession], count: int, workers: Workers,
                                  timeout: float = 30.0) -> None:
    """Until ``count`` engine workers have registered (they take a moment to import and connect)."""
    deadline = time.monotonic() + timeout
    while True:
        async with sessions() as session:
            registered = await session.scalar(text("SELECT count(*) FROM procrastinate.procrastinate_workers"))
        if (registered or 0) >= count:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{registered} of {count} engine workers up after {timeout:g} s\n{workers.logs()}")
        await asyncio.sleep(0.1)


def settings_for(database_url: str) -> Settings:
    return Settings(database_url=database_url, job_backend="procrastinate", job_max_attempts=3)
