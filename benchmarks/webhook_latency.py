"""How fast POST /v1/webhooks/cms answers 202 under a burst: ``python -m benchmarks.webhook_latency``.

The app runs in process (httpx ASGITransport) on a fresh SQLite file, without the worker, so the
numbers are the route's own work: verify the signature, read the event, check the article (it is
prepared later, by its analysis job), and one transaction (delivery, article as received, analysis
job, coalesced story refresh), shared with the events in flight beside it. ``benchmarks.intake``
measures the same over HTTP from another process, with the event loop's lag. Events are
distinct articles spread over a few stories, signed with the Standard Webhooks library; one run
sends them one after another, one with ``--concurrency`` requests in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import structlog
from asgi_lifespan import LifespanManager
from standardwebhooks.webhooks import Webhook

from benchmarks.service_load import SECRET, signed
from service.api import create_app
from service.settings import Settings


def _event(n: int, stories: int) -> bytes:
    body = (
        f"The council of Town{n} approved a budget of {n} million euros on Monday. "
        f"The mayor of Town{n} said schools get most of the money. Critics in Town{n} called the plan rushed."
    )
    data = {
        "id": f"cms-{n}",
        "story_id": f"story-{n % stories}",
        "outlet": f"Outlet {n}",
        "title": f"Town{n}",
        "body": body,
    }
    return json.dumps({"type": "article.published", "timestamp": datetime.now(UTC).isoformat(), "data": data}).encode()


def _summary(label: str, samples: list[float], wall: float) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return (
        f"{label}: n={len(ms)} p50={statistics.median(ms):.1f} ms p90={ms[int(0.9 * (len(ms) - 1))]:.1f} ms "
        f"p99={p99:.1f} ms max={ms[-1]:.1f} ms throughput={len(ms) / wall:.0f}/s"
    )


async def run(events: int, concurrency: int, stories: int, database_url: str | None) -> list[str]:
    lines = []
    signer = Webhook(SECRET)
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        settings = Settings(
            database_url=url,
            webhook_secret=SECRET,
            run_worker=False,
            migrate_on_start=True,
            llm_base_url="http://127.0.0.1:9/v1",
        )
        app = create_app(settings)
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

                async def one(n: int, samples: list[float]) -> None:
                    body = _event(n, stories)
                    started = time.perf_counter()
                    response = await client.post(
                        "/v1/webhooks/cms", content=body, headers=signed(signer, f"msg_{n}", body)
                    )
                    samples.append(time.perf_counter() - started)
                    assert response.status_code == 202, response.text

                for label, offset, width in (("sequential", 0, 1), (f"{concurrency} in flight", events, concurrency)):
                    samples: list[float] = []
                    slots = asyncio.Semaphore(width)

                    async def limited(n: int, samples: list[float] = samples, slots: asyncio.Semaphore = slots) -> None:
                        async with slots:
                            await one(n, samples)

                    started = time.perf_counter()
                    await asyncio.gather(*(limited(offset + i) for i in range(events)))
                    lines.append(_summary(label, samples, time.perf_counter() - started))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--stories", type=int, default=5)
    parser.add_argument("--database-url", help="An empty, migrated database (default: a fresh SQLite file).")
    args = parser.parse_args()
    # Per-request log lines would measure the terminal, not the route.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    for line in asyncio.run(run(args.events, args.concurrency, args.stories, args.database_url)):
        print(line)


if __name__ == "__main__":
    main()
