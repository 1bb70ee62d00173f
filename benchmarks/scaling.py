"""Articles per minute with 1, 2 and 4 engine worker processes: ``python -m benchmarks.scaling``.

Not a test. Each run gets a fresh PostgreSQL database (cloned from one migrated template), starts
W real ``newsdigest worker`` processes on the procrastinate backend, waits until they have
registered, then queues ``--per-worker`` x W article analyses in one transaction and times them
from that commit to the last job's finish. The model is ``tests.fake_openai`` in its computed mode: every call
answers after ``--delay`` seconds, so the work is waiting on the model, as with a hosted endpoint,
and ideal scaling is linear: W workers should do W times what one does. The table gives the ratio.

An analysis is two model calls sent together (key facts, sentiment), so one job slot does about
60 / delay articles a minute; ``--concurrency`` sets the slots per worker process. Keep the
product of workers and concurrency modest on a small machine: the workers, the stub and
PostgreSQL share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy import func, select, text
from sqlalchemy.engine import URL

from schemas import ArticleIn
from service.pipeline.text import prepare
from service.store import articles, db, jobs
from service.store.models import Job
from tests import fake_openai

NEWSDIGEST = Path(sys.executable).with_name("newsdigest")


@dataclass(frozen=True)
class Run:
    workers: int
    articles: int
    seconds: float

    @property
    def per_minute(self) -> float:
        return self.articles / self.seconds * 60


async def _admin(url: URL, *statements: str) -> None:
    conn = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username, password=url.password,
                                 database="postgres")
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _article(n: int) -> ArticleIn:
    body = (f"The council of Town{n} approved a budget of {n} million euros on Monday. "
            f"The mayor of Town{n} said schools get most of the money. Critics in Town{n} called the plan rushed. "
            f"The vote in Town{n} passed by seven to four.")
    return ArticleIn(outlet=f"Outlet {n}", title=f"Town{n} budget", body=body, story_id=f"story-{n % 7}")


def _start_stub(delay: float) -> tuple[subprocess.Popen[str], str]:
    stub, port = fake_openai.spawn("--delay", str(delay), "--facts", "2")
    return stub, f"http://127.0.0.1:{port}/v1"


def _env(url: str, llm: str, concurrency: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSDIGEST_", "OPENAI_"))}
    env.update({f"NEWSDIGEST_{k}": v for k, v in {
        "DATABASE_URL": url, "JOB_BACKEND": "procrastinate", "LLM_BASE_URL": llm, "LLM_API_KEY": "bench",
        "LLM_MODE": "json_object", "LLM_MODEL": "latency-stub", "WORKER_CONCURRENCY": str(concurrency),
        "WORKER_POLL_INTERVAL_S": "0.5", "LOG_LEVEL": "warning",
        # The stub stands for a hosted endpoint: 4 calls in flight, not the one-slot default of a loopback URL.
        "LLM_MAX_CONCURRENCY": "4", "WORKER_METRICS_PORT": "0",
    }.items()})
    return env


async def _until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def one_run(template: URL, name: str, workers: int, count: int, llm: str, concurrency: int,
                  logs: Path) -> Run:
    url = template.set(database=name)
    await _admin(url, f'CREATE DATABASE "{name}" TEMPLATE "{template.database}"')
    rendered = url.render_as_string(hide_password=False)
    engine = db.make_engine(rendered)
    sessions = db.make_sessionmaker(engine)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(workers):
            with (logs / f"{name}-worker-{i}.log").open("wb") as out:
                procs.append(subprocess.Popen([str(NEWSDIGEST), "worker"], env=_env(rendered, llm, concurrency),
                                              stdout=out, stderr=subprocess.STDOUT))

        async def registered() -> bool:
            async with sessions() as session:
                up = await session.scalar(text("SELECT count(*) FROM procrastinate.procrastinate_workers"))
            return (up or 0) >= workers

        await _until(registered, 60, f"{workers} workers to start (logs in {logs})")
        prepared = [prepare(_article(n), max_chars=100_000) for n in range(count)]
        started = time.time()
        async with sessions() as session, session.begin():
            for item in prepared:
                record = await articles.save_article(session=session, prepared=item)
                await jobs.enqueue(session=session, kind="analyze_article", payload={"article_id": record.id})

        async def finished() -> bool:
            async with sessions() as session:
                done = await session.scalar(select(func.count()).select_from(Job).where(Job.status == "succeeded"))
                failed = await session.scalar(select(func.count()).select_from(Job).where(Job.status == "failed"))
            if failed:
                raise SystemExit(f"{failed} job(s) failed: see {logs}")
            return (done or 0) >= count

        await _until(finished, 600, f"{count} analyses")
        async with sessions() as session:
            last = await session.scalar(select(func.max(Job.finished_at)))
        assert last is not None
        return Run(workers, count, last.timestamp() - started)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        await engine.dispose()
        await _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def table(runs: list[Run], concurrency: int, delay: float) -> str:
    base = runs[0].per_minute / runs[0].workers
    lines = ["| worker processes | articles | seconds | articles/min | linear ideal | ratio to ideal |",
             "|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        ideal = base * run.workers
        lines.append(f"| {run.workers} | {run.articles} | {run.seconds:.1f} | {run.per_minute:.1f} | {ideal:.1f} "
                     f"| {run.per_minute / ideal:.2f} |")
    lines.append(f"\nOne job slot's ceiling: {60 / delay:.0f} articles/min (two {delay:g} s model calls in "
                 f"parallel); {concurrency} slot(s) per worker.")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    server = db.async_url(args.postgres)
    template = server.set(database=f"newsdigest_bench_{os.getpid()}_tpl")
    await _admin(template, f'DROP DATABASE IF EXISTS "{template.database}"', f'CREATE DATABASE "{template.database}"')
    stub, llm = _start_stub(args.delay)
    runs: list[Run] = []
    try:
        await asyncio.to_thread(db.upgrade, template.render_as_string(hide_password=False))
        with tempfile.TemporaryDirectory(prefix="nd-scaling-") as tmp:
            for workers in args.workers:
                run = await one_run(template, f"newsdigest_bench_{os.getpid()}_{workers}", workers,
                                    args.per_worker * workers, llm, args.concurrency, Path(tmp))
                print(f"{workers} worker(s): {run.articles} articles in {run.seconds:.1f} s", file=sys.stderr)
                runs.append(run)
    finally:
        stub.terminate()
        stub.wait(timeout=10)
        await _admin(template, f'DROP DATABASE IF EXISTS "{template.database}" WITH (FORCE)')
    print(table(runs, args.concurrency, args.delay))
    print(f"\n`{shlex.join(['python', '-m', 'benchmarks.scaling', *sys.argv[1:]])}`")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workers", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 4],
                        help="worker process counts to compare, comma-separated (default 1,2,4)")
    parser.add_argument("--per-worker", type=int, default=12, help="articles queued per worker process (default 12)")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds the stub takes per model call (default 1)")
    parser.add_argument("--concurrency", type=int, default=1, help="job slots per worker process (default 1)")
    parser.add_argument("--postgres", default=os.environ.get("PYTEST_POSTGRES_URL",
                                                             "postgresql://postgres@127.0.0.1:5432/postgres"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
