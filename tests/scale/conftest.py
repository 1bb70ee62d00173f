"""Scale-out tests: real ``newsdigest worker`` processes on the procrastinate backend and PostgreSQL.

Each test gets a database of its own, cloned from a template migrated once per run
(``newsdigest_scale_<pid>_tpl``), so a test's workers, jobs and rate window never meet another's;
all are dropped at the end. The model is ``benchmarks.latency_stub`` (valid answers after a fixed
delay) on 127.0.0.1, wrapped to record when each request arrived. Skipped without a PostgreSQL
server or without procrastinate (``pip install -e '.[scale]'``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from benchmarks import latency_stub
from schemas import ArticleIn
from service.pipeline.text import prepare
from service.settings import Settings
from service.store import articles, db, jobs
from service.store.articles import ArticleRecord
from tests.conftest import no_postgres

POSTGRES_SERVER = os.environ.get("PYTEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
NEWSDIGEST = Path(sys.executable).with_name("newsdigest")
_counter = itertools.count(1)


async def _maintenance(url: URL, *statements: str) -> None:
    conn = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username, password=url.password,
                                 database="postgres")
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_url() -> Iterator[URL]:
    url = db.async_url(POSTGRES_SERVER).set(database=f"newsdigest_scale_{os.getpid()}_tpl")
    try:
        asyncio.run(_maintenance(url, f'DROP DATABASE IF EXISTS "{url.database}"', f'CREATE DATABASE "{url.database}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        no_postgres(f"no PostgreSQL server at {url.render_as_string()}: {exc}")
    db.upgrade(url.render_as_string(hide_password=False))
    yield url
    asyncio.run(_maintenance(url, f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))


@pytest.fixture
def database_url(template_url: URL) -> Iterator[str]:
    """A migrated database for this test alone."""
    url = template_url.set(database=f"newsdigest_scale_{os.getpid()}_{next(_counter)}")
    asyncio.run(_maintenance(url, f'CREATE DATABASE "{url.database}" TEMPLATE "{template_url.database}"'))
    yield url.render_as_string(hide_password=False)
    asyncio.run(_maintenance(url, f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = db.make_engine(database_url)
    try:
        yield db.make_sessionmaker(engine)
    finally:
        await engine.dispose()


class RecordingStub(ThreadingHTTPServer):
    """An OpenAI-compatible double answering like ``benchmarks.latency_stub`` after ``delay`` seconds.

    It notes when each request arrived: a worker killed mid-call never reads its answer, but its
    request is on record.
    """

    # server_close() waits for every handler, also one still sleeping for a worker that was killed,
    # so no thread or socket outlives the test.
    daemon_threads = False
    block_on_close = True

    def __init__(self, *, delay: float) -> None:
        super().__init__((latency_stub.HOST, 0), _StubHandler)
        self.delay = delay
        self.lock = threading.Lock()
        self.arrivals: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        return f"http://{latency_stub.HOST}:{self.server_address[1]}/v1"

    def count(self, prompt: str, first_line: str) -> int:
        with self.lock:
            return sum(1 for a in self.arrivals if a["prompt"] == prompt and a["first_line"] == first_line)


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RecordingStub

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        messages = body.get("messages") or []
        with self.server.lock:
            self.server.arrivals.append({"prompt": latency_stub.prompt_name(body), "at": time.time(),
                                         "first_line": latency_stub.first_user(messages).split("\n", 1)[0]})
        time.sleep(self.server.delay)
        content = json.dumps(latency_stub.answer(body, facts=2, reask_marker=None))
        data = json.dumps({
            "id": "chatcmpl-scale", "object": "chat.completion", "created": int(time.time()), "model": "stub",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the worker that asked was killed or stopped meanwhile


@pytest.fixture
def start_stub() -> Iterator[Callable[[float], RecordingStub]]:
    """Start the model double with a delay per call; stopped at the end of the test."""
    started: list[tuple[RecordingStub, threading.Thread]] = []

    def start(delay: float) -> RecordingStub:
        server = RecordingStub(delay=delay)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def worker_env(database_url: str, stub: RecordingStub, **overrides: Any) -> dict[str, str]:
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
