"""The shared LLM rate limit: the window arithmetic, the in-memory limiter, two processes on
PostgreSQL that together never exceed the limit, and the model client asking before each attempt."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.llm.client import LLMClient
from service.llm.ratelimit import Limits, LocalRateLimiter, PostgresRateLimiter, request_tokens, wait_needed
from service.prompts import PromptRegistry
from service.settings import Settings
from tests.databases import POSTGRES, only_on
from tests.factories import neutral
from tests.fake_openai import FaultServer, ok, status

ROOT = Path(__file__).resolve().parents[2]


def most_in_any_window(times: list[float], window_s: float) -> int:
    """The largest number of ``times`` inside one half-open window [t, t + window_s)."""
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + window_s) for t in times)


def test_requests_wait_for_the_oldest_call_that_must_leave_the_window() -> None:
    limits = Limits(requests=3, window_s=10)
    assert wait_needed([(100.0, 0), (101.0, 0)], 105.0, 0, limits) == 0
    assert wait_needed([(100.0, 0), (101.0, 0), (102.0, 0)], 105.0, 0, limits) == pytest.approx(5.0)
    assert wait_needed([(100.0, 0), (101.0, 0), (102.0, 0), (103.0, 0)], 105.0, 0, limits) == pytest.approx(6.0)


def test_tokens_wait_until_enough_of_the_window_has_aged_out() -> None:
    limits = Limits(tokens=1000, window_s=60)
    window = [(0.0, 400), (10.0, 300), (20.0, 200)]
    assert wait_needed(window, 30.0, 100, limits) == 0  # 900 + 100 fits exactly
    assert wait_needed(window, 30.0, 500, limits) == pytest.approx(30.0)  # the call at 0 leaves at 60
    assert wait_needed(window, 30.0, 700, limits) == pytest.approx(40.0)  # the calls at 0 and 10 must leave
    assert wait_needed(window, 30.0, 900, limits) == pytest.approx(50.0)  # all three must leave
    # Bigger than the whole budget: alone, once the window is empty.
    assert wait_needed(window, 30.0, 5000, limits) == pytest.approx(50.0)
    assert wait_needed([], 30.0, 5000, limits) == 0


def test_request_tokens_count_the_prompt_and_max_tokens() -> None:
    request = {"messages": [{"role": "system", "content": "x" * 40}, {"role": "user", "content": "y" * 41}],
               "max_tokens": 900}
    assert request_tokens(request) == 21 + 900


async def test_the_local_limiter_keeps_to_its_window() -> None:
    limiter = LocalRateLimiter(Limits(requests=3, window_s=0.4))
    times = await asyncio.gather(*(limiter.acquire(tokens=1) for _ in range(7)))
    assert most_in_any_window(list(times), 0.4) == 3
    assert max(times) - min(times) >= 0.8  # seven calls at three per window need two full waits


@only_on(POSTGRES)
def test_two_processes_share_one_limit(database_url: str) -> None:
    """16 concurrent acquires from two processes, at most 5 per 2 s: never 6 in any 2 s."""
    probe = [sys.executable, "-m", "tests.scale.limiter_probe", database_url, "5", "2.0", "8"]
    procs = [subprocess.Popen(probe, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [proc.communicate(timeout=60)[0].decode() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    times: list[float] = []
    for output in outputs:
        (line,) = [line for line in output.splitlines() if line.startswith("ADMITTED ")]
        times.extend(json.loads(line.removeprefix("ADMITTED ")))
    assert len(times) == 16
    assert most_in_any_window(times, 2.0) == 5
    assert max(times) - min(times) >= 2 * 2.0  # 16 at 5 per window: at least three windows apart


@only_on(POSTGRES)
async def test_the_postgres_window_forgets_calls_older_than_the_window(database_url: str) -> None:
    limiter = PostgresRateLimiter(database_url, Limits(requests=2, tokens=50, window_s=0.5))
    try:
        first = await limiter.acquire(tokens=30)
        second = await limiter.acquire(tokens=30)  # 60 tokens > 50: waits for the first to age out
        assert second - first >= 0.5
    finally:
        await limiter.aclose()


class Recorder:
    def __init__(self) -> None:
        self.tokens: list[int] = []

    async def acquire(self, *, tokens: int = 0) -> float:
        self.tokens.append(tokens)
        return 0.0

    async def aclose(self) -> None:
        return None


async def test_the_model_client_asks_the_limiter_before_every_attempt(
    fault_server: FaultServer, registry: PromptRegistry
) -> None:
    settings = Settings(llm_base_url=fault_server.base_url, llm_api_key="k", llm_mode="json_object",
                        llm_model="m", llm_retry_initial_wait_s=0, llm_retry_max_wait_s=0)
    limiter = Recorder()
    client = LLMClient(settings, limiter=limiter)
    fault_server.script([status(500), ok(neutral())])
    prompt = registry.resolve([])["sentiment"]
    messages = [{"role": "user", "content": "z" * 400}]
    try:
        await client.complete(prompt, messages)
    finally:
        await client.close()
    expected = request_tokens({"messages": messages, "max_tokens": prompt.meta.max_tokens})
    assert limiter.tokens == [expected, expected]  # the retry asked again
