"""The running service measured from a second process: ``python -m benchmarks.service_load``.

Starts ``tests.fake_openai`` (computed answers) and ``newsdigest serve`` (uvicorn with its in-process worker, on a
fresh SQLite file unless ``--database-url``) as subprocesses, then, from this process over loopback:

(e) the API's own cost per request, no model in the path: ``GET /healthz``, ``POST /v1/articles``
    (a new article: stored as received, queued, 202; the worker prepares it) and ``GET /v1/jobs/{id}``,
    one after another;
(f) a webhook burst: ``--events`` distinct signed ``article.published`` events with ``--concurrency``
    in flight: requests per second and p50/p99 to the 202; then it waits for the worker to finish
    every analysis and checks each event was processed exactly once: the stub saw each article's
    key-facts and sentiment prompts once, and the jobs table holds one succeeded analysis per
    article. The whole burst is then delivered again with the same ``webhook-id`` headers (a CMS
    retrying): every answer must say ``duplicate`` and no job or model call may follow;
(g) an unchanged article re-submitted (``POST /v1/articles?wait=10`` with the same text): model calls and
    latency to the 200 with its facts (a new job, answered from the stored extraction).

Nothing is asserted as a test would; a broken invariant is printed as a failure and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog
from standardwebhooks.webhooks import Webhook

from tests import fake_openai

ROOT = Path(__file__).resolve().parent.parent
NEWSDIGEST = Path(sys.executable).with_name("newsdigest")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
API_KEY = "bench-key"
DELAY_S = 0.2


def article_body(n: int) -> str:
    return (
        f"The council of Town{n} approved a budget of {n} million euros on Monday. "
        f"The mayor of Town{n} said schools get most of the money. "
        f"Critics in Town{n} called the plan rushed and asked for an audit. "
        f"The vote was {n % 7 + 5} to {n % 5 + 1} after a long debate."
    )


def event(n: int, stories: int) -> bytes:
    data = {"id": f"cms-{n}", "story_id": f"story-{n % stories}", "outlet": f"Outlet {n % 9}",
            "title": f"Town{n} budget", "body": article_body(n)}
    return json.dumps({"type": "article.published", "timestamp": datetime.now(UTC).isoformat(), "data": data}).encode()


def signed(signer: Webhook, msg_id: str, body: bytes) -> dict[str, str]:
    now = datetime.now(UTC)
    return {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(msg_id, now, body.decode())}


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    if not ms:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 1),
            "p99_ms": round(ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))], 1), "max_ms": round(ms[-1], 1)}


def stub_stats(port: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
        data: list[dict[str, Any]] = json.load(response)
    return data


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(database_url: str, stub_port: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSDIGEST_", "OPENAI_"))}
    env.update({
        "NEWSDIGEST_DATABASE_URL": database_url, "NEWSDIGEST_API_KEYS": API_KEY,
        "NEWSDIGEST_WEBHOOK_SECRET": SECRET, "NEWSDIGEST_LLM_BASE_URL": f"http://127.0.0.1:{stub_port}/v1",
        "NEWSDIGEST_LLM_API_KEY": "stub", "NEWSDIGEST_LLM_MODEL": "stub", "NEWSDIGEST_LLM_MODE": "json_object",
        "NEWSDIGEST_LLM_MAX_CONCURRENCY": "8", "NEWSDIGEST_WORKER_CONCURRENCY": "8",
        "NEWSDIGEST_WORKER_POLL_INTERVAL_S": "0.2", "NEWSDIGEST_MIGRATE_ON_START": "true",
        # Per-request log lines would measure the terminal, not the service.
        "NEWSDIGEST_LOG_LEVEL": "warning",
    })
    with log.open("wb") as out:
        proc = subprocess.Popen([str(NEWSDIGEST), "serve", "--port", str(port)], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"newsdigest serve did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)


def jobs_by_kind(db_file: Path) -> Counter[tuple[str, str]]:
    with sqlite3.connect(db_file) as conn:
        return Counter({(kind, status): count for kind, status, count in
                        conn.execute("SELECT kind, status, count(*) FROM jobs GROUP BY kind, status")})


async def timed(call: Any) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = await call
    return time.perf_counter() - started, response


async def api_overhead(client: httpx.AsyncClient, requests: int) -> dict[str, Any]:
    """(e): one request at a time, so each number is the service's own work plus loopback."""
    health, submit, job = [], [], []
    job_id = ""
    for n in range(requests):
        seconds, _ = await timed(client.get("/healthz"))
        health.append(seconds)
        body = {"outlet": "Bench Post", "title": f"Request {n}", "body": article_body(100_000 + n)}
        seconds, response = await timed(client.post("/v1/articles", json=body))
        assert response.status_code in (200, 202), response.text
        submit.append(seconds)
        job_id = response.json().get("job_id") or job_id
        seconds, response = await timed(client.get(f"/v1/jobs/{job_id}"))
        assert response.status_code == 200, response.text
        job.append(seconds)
    return {"GET /healthz": percentiles(health), "POST /v1/articles (new, 202)": percentiles(submit),
            "GET /v1/jobs/{id}": percentiles(job)}


async def burst(client: httpx.AsyncClient, events: int, concurrency: int, stories: int, *,
                offset: int, replay: bool = False) -> dict[str, Any]:
    """(f): ``events`` signed deliveries, ``concurrency`` in flight; answers counted by status."""
    signer = Webhook(SECRET)
    slots = asyncio.Semaphore(concurrency)
    samples: list[float] = []
    statuses: Counter[str] = Counter()

    async def one(n: int) -> None:
        body = event(n, stories)
        async with slots:
            seconds, response = await timed(client.post("/v1/webhooks/cms", content=body,
                                                        headers=signed(signer, f"msg_{n}", body)))
        samples.append(seconds)
        statuses[f"{response.status_code} {response.json().get('status', '')}".strip()] += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(offset + i) for i in range(events)))
    wall = time.perf_counter() - started
    return {"events": events, "concurrency": concurrency, "replay": replay, "wall_s": round(wall, 2),
            "per_s": round(events / wall, 1), "answers": dict(statuses), **percentiles(samples)}


async def wait_for_analyses(db_file: Path, expected: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        counts = jobs_by_kind(db_file)
        done = sum(c for (kind, status), c in counts.items() if kind == "analyze_article" and status
                   in ("succeeded", "failed"))
        if done >= expected:
            return time.monotonic() - started
        await asyncio.sleep(0.25)
    raise RuntimeError(f"analyses not finished after {timeout} s: {jobs_by_kind(db_file)}")


async def wait_until_idle(db_file: Path, timeout: float) -> None:
    """Until no job is queued or running (the story refreshes and digests after the analyses)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not any(status in ("queued", "running") for (_, status) in jobs_by_kind(db_file)):
            return
        await asyncio.sleep(0.25)
    raise RuntimeError(f"jobs still queued or running after {timeout} s: {jobs_by_kind(db_file)}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stub, stub_port = fake_openai.spawn("--delay", str(DELAY_S))
    tmp = Path(tempfile.mkdtemp(prefix="newsdigest-load-"))
    db_file = tmp / "load.db"
    service, base = start_service(f"sqlite+aiosqlite:///{db_file}", stub_port, tmp / "serve.log")
    failures: list[str] = []
    try:
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {API_KEY}"},
                                     timeout=60, limits=limits) as client:
            overhead = await api_overhead(client, args.requests)
            await wait_for_analyses(db_file, args.requests, timeout=120)

            calls_before = len(stub_stats(stub_port))
            accepted = await burst(client, args.events, args.concurrency, args.stories, offset=0)
            drained_s = await wait_for_analyses(db_file, args.requests + args.events, timeout=600)
            # The story refreshes the burst queued run a little later (story_refresh_delay_s): the replay
            # must start after them, or their digests would be counted as the replay's.
            await wait_until_idle(db_file, timeout=120)
            await asyncio.sleep(1.0)  # a job that would run twice would show up now
            calls = stub_stats(stub_port)[calls_before:]
            per_article = Counter((c["prompt"], c["first_line"]) for c in calls if "Digest" not in c["prompt"])
            counts = jobs_by_kind(db_file)
            analyses = {status: c for (kind, status), c in counts.items() if kind == "analyze_article"}
            once = all(v == 1 for v in per_article.values()) and len(per_article) == 2 * args.events
            if not once:
                failures.append(f"model calls per (prompt, article) not all 1: {Counter(per_article.values())}")
            if analyses != {"succeeded": args.requests + args.events}:
                failures.append(f"analysis jobs: {analyses}")

            replay_calls_before = len(stub_stats(stub_port))
            replayed = await burst(client, args.events, args.concurrency, args.stories, offset=0, replay=True)
            await asyncio.sleep(2.0)
            replay_calls = len(stub_stats(stub_port)) - replay_calls_before
            if replayed["answers"] != {"200 duplicate": args.events} and replayed["answers"] != {
                    "202 duplicate": args.events}:
                failures.append(f"replayed deliveries answered {replayed['answers']}")
            if jobs_by_kind(db_file) != counts:
                failures.append("the replay changed the jobs table")

            # (g) the same article again, byte for byte: answered from the stored analysis.
            body = {"outlet": "Bench Post", "title": "Request 0", "body": article_body(100_000)}
            resubmit_calls_before = len(stub_stats(stub_port))
            resubmit = []
            for _ in range(args.requests):
                seconds, response = await timed(client.post("/v1/articles", params={"wait": 10}, json=body))
                if response.status_code != 200 or not response.json().get("facts"):
                    failures.append(f"re-submission answered {response.status_code}: {response.text[:200]}")
                    break
                resubmit.append(seconds)
            resubmit_calls = len(stub_stats(stub_port)) - resubmit_calls_before
    finally:
        service.terminate()
        service.wait(timeout=30)
        stub.terminate()
        stub.wait(timeout=10)
    return {
        "api_overhead": overhead,
        "burst": accepted,
        "burst_drained_s": round(drained_s, 1),
        "burst_model_calls": len(calls),
        "burst_processed_once": once,
        "burst_analyses": analyses,
        "replay": replayed,
        "replay_model_calls": replay_calls,
        "resubmit": {**percentiles(resubmit), "model_calls": resubmit_calls},
        "failures": failures,
    }


def markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    lines = ["### (e) API overhead per request (one at a time, loopback, SQLite, no model in the path)", "",
             "| request | n | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|"]
    for name, p in result["api_overhead"].items():
        lines.append(f"| {name} | {p['n']} | {p['p50_ms']} | {p['p99_ms']} | {p['max_ms']} |")
    b, r = result["burst"], result["replay"]
    lines += ["", f"### (f) Webhook burst from a second process ({args.events} distinct events, "
              f"{args.concurrency} in flight, {args.stories} stories)", "",
              "| delivery | requests/s | p50 ms | p99 ms | max ms | answers |", "|---|---:|---:|---:|---:|---|",
              f"| first | {b['per_s']} | {b['p50_ms']} | {b['p99_ms']} | {b['max_ms']} | {b['answers']} |",
              f"| same webhook-ids again | {r['per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | "
              f"{r['answers']} |", "",
              f"Worker drained the burst in {result['burst_drained_s']} s (stub delay {DELAY_S} s, 8 calls at once); "
              f"{result['burst_model_calls']} model calls; every article's two prompts exactly once: "
              f"{'yes' if result['burst_processed_once'] else 'NO'}; analysis jobs {result['burst_analyses']}; "
              f"model calls caused by the replay: {result['replay_model_calls']}.", "",
              "### (g) An unchanged article re-submitted", "",
              f"{result['resubmit']['n']} re-submissions: {result['resubmit']['model_calls']} model calls, "
              f"p50 {result['resubmit']['p50_ms']} ms, p99 {result['resubmit']['p99_ms']} ms (200 with the stored "
              "facts)."]
    if result["failures"]:
        lines += ["", "FAILURES: " + "; ".join(result["failures"])]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--stories", type=int, default=10)
    parser.add_argument("--requests", type=int, default=100, help="sequential requests per endpoint in (e) and (g)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    result = asyncio.run(run(args))
    result["markdown"] = markdown(result, args)
    result["args"] = vars(args)
    return result


if __name__ == "__main__":
    outcome = main()
    print(outcome["markdown"])
    sys.exit(1 if outcome["failures"] else 0)
