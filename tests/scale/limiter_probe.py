"""One process of the cross-process rate-limit test: ``python -m tests.scale.limiter_probe URL R W N``.

Makes N concurrent ``acquire()`` calls on a PostgreSQL rate limiter of R requests per W seconds
and prints ``ADMITTED`` and a JSON list of the database times at which each was admitted.
"""

from __future__ import annotations

import asyncio
import json
import sys

from service.llm.ratelimit import Limits, PostgresRateLimiter


async def main(url: str, requests: int, window_s: float, count: int) -> list[float]:
    limiter = PostgresRateLimiter(url, Limits(requests=requests, window_s=window_s))
    try:
        return list(await asyncio.gather(*(limiter.acquire(tokens=10) for _ in range(count))))
    finally:
        await limiter.aclose()


if __name__ == "__main__":
    url, requests, window_s, count = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    print("ADMITTED", json.dumps(asyncio.run(main(url, requests, window_s, count))), flush=True)
