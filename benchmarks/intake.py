"""Intake under a burst, one API process: ``python -m benchmarks.intake`` (part of ``make bench``).

For each database (a fresh SQLite file, and a fresh database on the PostgreSQL at ``--postgres``
when one answers), this starts one API process without a worker, as ``newsdigest serve
--no-worker`` runs (uvicorn, the app from ``create_app``, its logging at info in JSON lines into a
file), plus a loop-lag monitor in that process (``benchmarks.looplag``: a task sleeping 1 ms and
recording its overshoot) read through a benchmark-only route. From this process, over loopback,
with a minimal HTTP/1.1 client on keep-alive connections (so the client's own cost stays small and
out of the server's process):

- ``POST /v1/webhooks/cms``: distinct signed ``article.published`` events, one at a time, then
  ``--events`` of them with ``--concurrency`` in flight, then the same webhook-ids again (a CMS
  retrying: every answer must be ``duplicate``);
- ``POST /v1/articles``: new articles with ``--concurrency`` in flight.

Articles are about 1,500 characters (the median example article), each distinct, spread over
``--stories`` stories. Reported per phase: accepted requests per second, p50/p99/max to the answer,
the server's CPU per request, and the loop's maximum lag (and its p99) while the phase ran. Every
answer is checked (202 accepted or duplicate); anything else is a failure, printed, exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
API_KEY = "bench-key"
LAG_ROUTE = "/bench/lag"
_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")

_SENTENCES = [
    "The council of {town} approved a budget of {n} million euros on Monday after a long debate.",
    "Mayor Ana Ruiz said schools in {town} would get most of the money from next year.",
    "The vote was {a} to {b}, with two members of the opposition abstaining.",
    "Critics called the plan rushed and asked the regional auditor to review item {n}.",
    "Residents near the old harbour of {town} worry about {a} months of construction noise.",
    "The regional government will cover {b}0 percent of the cost, officials said on Tuesday.",
    "A spokesperson for the port authority said the contract would be tendered in May.",
    "Shop owners on Quay Street expect more visitors once the new bridge opens in {year}.",
]


def article_json(n: int, stories: int, *, cms_id: bool = True) -> dict[str, Any]:
    """About 1,500 characters of distinct text: the median example article's length."""
    town = f"Town{n}"
    body = " ".join(s.format(town=town, n=n, a=5 + n % 4, b=1 + n % 5, year=2026 + n % 3)
                    for k, s in enumerate(_SENTENCES * 2) if k < 15)
    data: dict[str, Any] = {"story_id": f"story-{n % stories}", "outlet": f"Outlet {n % 9}",
                            "title": f"{town} budget approved", "body": body, "language": "en"}
    if cms_id:
        data["id"] = f"cms-{n}"
    return data


# --- the server process ---------------------------------------------------------------------------


def serve(database_url: str, port: int) -> None:
    """One API process without a worker, plus the loop-lag monitor and its read-out route."""
    import uvicorn

    from benchmarks.looplag import LoopLag
    from service.api import create_app
    from service.api.http import ProblemH11Protocol
    from service.logs import configure_logging
    from service.settings import Settings

    settings = Settings(database_url=database_url, webhook_secret=SECRET, api_keys=[API_KEY], run_worker=False,
                        migrate_on_start=True, llm_base_url="http://127.0.0.1:9/v1", llm_api_key="unused",
                        environment="production", log_level="info")
    configure_logging(settings)  # JSON lines at info, as in production; stderr goes to a file
    app = create_app(settings)
    lag = LoopLag()
    lag.watch_steps()

    async def lag_route(reset: int = 0) -> dict[str, Any]:
        """The lag since the last reset, and this process's CPU seconds so far; ``?reset=1`` starts anew."""
        times = os.times()
        found = {**lag.summary(), "cpu_s": time.process_time(), "cpu_system_s": times.system}
        if reset:
            lag.reset()
        return found

    app.add_api_route(LAG_ROUTE, lag_route, methods=["GET"], include_in_schema=False)

    async def main() -> None:
        # As `newsdigest serve` runs it (service/cli/serve.py): its h11 protocol, no access log.
        config = uvicorn.Config(app, host="127.0.0.1", port=port, access_log=False, log_level="warning",
                                lifespan="on", http=ProblemH11Protocol)
        server = uvicorn.Server(config)
        lag.start()
        try:
            await server.serve()
        finally:
            await lag.stop()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(database_url: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSDIGEST_", "OPENAI_"))}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.intake", "--serve", database_url,
                                 "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, port
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the intake server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


# --- the load generator ---------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection: write a prepared request, read the answer. Nothing more."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        found = _LENGTH.search(head)
        body = await self.reader.readexactly(int(found.group(1))) if found else b""
        return int(head[9:12]), body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


def http_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def webhook_requests(first: int, count: int, stories: int) -> list[bytes]:
    from standardwebhooks.webhooks import Webhook

    signer = Webhook(SECRET)
    now = datetime.now(UTC)
    requests = []
    for n in range(first, first + count):
        body = json.dumps({"type": "article.published", "timestamp": now.isoformat(),
                           "data": article_json(n, stories)}).encode()
        msg_id = f"msg_{n}"
        requests.append(http_request("/v1/webhooks/cms", body, {
            "webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(msg_id, now, body.decode())}))
    return requests


def article_requests(first: int, count: int, stories: int) -> list[bytes]:
    return [http_request("/v1/articles", json.dumps(article_json(n, stories, cms_id=False)).encode(),
                         {"Authorization": f"Bearer {API_KEY}"}) for n in range(first, first + count)]


async def lag_read(port: int, *, reset: bool) -> dict[str, Any]:
    conn = Connection(port)
    try:
        raw = f"GET {LAG_ROUTE}{'?reset=1' if reset else ''} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        status, body = await conn.request(raw)
    finally:
        await conn.close()
    assert status == 200, body
    found: dict[str, Any] = json.loads(body)
    return found


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 1),
            "p99_ms": round(ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))], 1), "max_ms": round(ms[-1], 1)}


def database_cpu_s(database: str | None) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving ``database`` on this machine (from ``/proc``).

    A backend's process title names its database (``postgres: 15/main: user database host state``).
    PostgreSQL's shared processes (WAL writer, checkpointer) are left out: other databases use them too.
    """
    if database is None or not Path("/proc").is_dir():
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
            if len(title) < 4 or title[0] != "postgres:" or database not in title[3:5]:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        found[int(proc.name)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return found


async def phase(port: int, requests: list[bytes], concurrency: int, expect: set[str],
                database: str | None = None) -> dict[str, Any]:
    """Send ``requests`` with ``concurrency`` in flight (one connection each); latency per request.

    CPU per request: the server process's (and how much of it the kernel's), this load generator's,
    and, on PostgreSQL, that of the backends serving the benchmark's database.
    """
    await lag_read(port, reset=True)
    backends = database_cpu_s(database)
    client_cpu = time.process_time()
    before = await lag_read(port, reset=True)
    pending = iter(requests)
    samples: list[float] = []
    answers: Counter[str] = Counter()

    async def client() -> None:
        conn = Connection(port)
        try:
            for raw in pending:
                started = time.perf_counter()
                status, body = await conn.request(raw)
                samples.append(time.perf_counter() - started)
                answers[f"{status} {json.loads(body).get('status', '')}".strip()] += 1
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    after = await lag_read(port, reset=True)
    client_ms = (time.process_time() - client_cpu) * 1000 / len(requests)
    spent = database_cpu_s(database)
    database_ms = (sum(cpu - backends.get(pid, 0.0) for pid, cpu in spent.items()) * 1000 / len(requests)
                   if database is not None else None)
    cpu_ms = (after["cpu_s"] - before["cpu_s"]) * 1000 / len(requests)
    system_ms = (after["cpu_system_s"] - before["cpu_system_s"]) * 1000 / len(requests)
    unexpected = {k: v for k, v in answers.items() if k not in expect}
    return {"requests": len(requests), "concurrency": concurrency, "wall_s": round(wall, 2),
            "per_s": round(len(requests) / wall, 1), **percentiles(samples), "server_cpu_ms": round(cpu_ms, 2),
            "server_cpu_system_ms": round(system_ms, 2), "client_cpu_ms": round(client_ms, 2),
            "database_cpu_ms": None if database_ms is None else round(database_ms, 2),
            "lag": {k: after[k] for k in ("samples", "max_ms", "p99_ms", "p50_ms", "over_10ms", "cpu_max_ms",
                                          "gc_max_ms", "gc_runs", "step_max_ms", "step_max_what", "step_cpu_max_ms",
                                          "step_cpu_max_what")},
            "answers": dict(answers), "unexpected": unexpected}


async def measure(database: str, url: str, args: argparse.Namespace, log: Path) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    proc, port = start_server(url, log)
    db = make_url(url).database if make_url(url).get_backend_name() == "postgresql" else None
    try:
        # Warm-up: imports, the first statements compiled, the pool's connections opened.
        warm = webhook_requests(10_000_000, 300, args.stories)
        await phase(port, warm, args.concurrency, {"202 accepted"}, db)
        await phase(port, article_requests(10_000_000, 100, args.stories), args.concurrency, {"202 queued"}, db)
        burst = webhook_requests(0, args.events, args.stories)
        result = {
            "database": database,
            "webhook_sequential": await phase(port, webhook_requests(5_000_000, args.sequential, args.stories), 1,
                                              {"202 accepted"}, db),
            "webhook_burst": await phase(port, burst, args.concurrency, {"202 accepted"}, db),
            "webhook_replay": await phase(port, burst, args.concurrency, {"202 duplicate"}, db),
            "articles_burst": await phase(port, article_requests(20_000_000, args.events, args.stories),
                                          args.concurrency, {"202 queued"}, db),
        }
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    result["failures"] = [f"{database} {name}: {p['unexpected']}" for name, p in result.items()
                          if isinstance(p, dict) and p.get("unexpected")]
    return result


async def postgres_database(server: str, name: str, *, drop_only: bool = False) -> str | None:
    """A fresh database ``name`` on ``server`` (its URL), or None when no server answers."""
    import asyncpg

    from service.store import db

    url = db.async_url(server)
    try:
        conn = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username,
                                     password=url.password, database=url.database or "postgres", timeout=5)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="newsdigest-intake-"))
    results: list[dict[str, Any]] = []
    results.append(await measure("SQLite file", f"sqlite+aiosqlite:///{tmp / 'intake.db'}", args, tmp / "sqlite.log"))
    name = f"newsdigest_bench_{os.getpid()}"
    url = await postgres_database(args.postgres, name)
    if url is None:
        print(f"  no PostgreSQL at {args.postgres}: measured on SQLite only", file=sys.stderr)
    else:
        try:
            results.append(await measure("PostgreSQL", url, args, tmp / "postgres.log"))
        finally:
            await postgres_database(args.postgres, name, drop_only=True)
    return {"events": args.events, "concurrency": args.concurrency, "stories": args.stories,
            "load_avg": os.getloadavg(), "results": results,
            "failures": [f for r in results for f in r["failures"]]}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"### Intake: one API process, no worker ({result['events']} distinct ~1,500-character articles per "
             f"burst, {result['concurrency']} in flight, keep-alive loopback client in another process)", "",
             "| database | requests | in flight | requests/s | p50 ms | p99 ms | max ms | server CPU ms/request | "
             "CPU ms/request: PostgreSQL / load generator | loop lag ms: max / p99 | "
             "longest single step ms: wall / CPU | answers |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    names = {"webhook_sequential": "webhook, one at a time", "webhook_burst": "webhook, new events",
             "webhook_replay": "webhook, same webhook-ids again", "articles_burst": "`POST /v1/articles`, new"}
    for r in result["results"]:
        for key, label in names.items():
            p = r[key]
            answers = ", ".join(f"{v} x {k}" for k, v in p["answers"].items())
            database_ms = "–" if p.get("database_cpu_ms") is None else p["database_cpu_ms"]
            lines.append(f"| {r['database']} | {label} | {p['concurrency']} | {p['per_s']:.0f} | {p['p50_ms']} | "
                         f"{p['p99_ms']} | {p['max_ms']} | {p['server_cpu_ms']} | {database_ms} / "
                         f"{p.get('client_cpu_ms', '–')} | {p['lag']['max_ms']} / "
                         f"{p['lag']['p99_ms']} | {p['lag']['step_max_ms']} / {p['lag']['step_cpu_max_ms']} | "
                         f"{answers} |")
    if result["failures"]:
        lines += ["", "FAILURES: " + "; ".join(result["failures"])]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=3000, help="requests per burst")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=300, help="requests sent one at a time")
    parser.add_argument("--stories", type=int, default=20)
    parser.add_argument("--postgres", default=os.environ.get("PYTEST_POSTGRES_URL",
                                                             "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--serve", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.serve:
        serve(args.serve, args.port)
        return
    result = asyncio.run(run(args))
    print(markdown(result))
    sys.exit(1 if result["failures"] else 0)


if __name__ == "__main__":
    main()
