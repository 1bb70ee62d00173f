"""A call's latency_ms is the model's time; the wait for a concurrency slot is queue_ms (and its own metric)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from schemas import ArticleIn, CallUsage, Usage
from service.llm.client import LLMClient
from service.pipeline.extract import prompt_context
from service.pipeline.text import prepare
from service.prompts import Prompt, PromptRegistry
from service.settings import Settings
from tests.fake_openai import FaultServer, delay, ok

pytestmark = pytest.mark.block_network(allowed_hosts=[r"127\.0\.0\.1$"])

PROMPTS_DIR = Path(__file__).resolve().parent.parent.parent / "prompts"
FACTS = {"facts": [{"claim": "The city council approved a budget of $4.2 million.", "sentences": [1]}]}
DELAY_S = 0.4
#: Scheduling, the HTTP round trip and a busy machine; far below DELAY_S, so the two cannot be confused.
SLACK_MS = 150


@pytest.fixture(scope="module")
def prompt() -> Prompt:
    return PromptRegistry.load(PROMPTS_DIR).get("key_facts")


@pytest.fixture(scope="module")
def messages(prompt: Prompt) -> list[dict[str, str]]:
    article = prepare(ArticleIn(outlet="Example Times", title="Council passes budget",
                                body="The city council approved a budget of $4.2 million on Monday."), max_chars=10_000)
    return prompt.messages(**prompt_context(article))


@pytest_asyncio.fixture
async def one_slot(fault_server: FaultServer) -> AsyncIterator[LLMClient]:
    settings = Settings(llm_base_url=fault_server.base_url, llm_api_key="test-key", llm_model="gpt-4o-mini",
                        llm_mode="json_schema", llm_max_concurrency=1, llm_max_attempts=1, llm_timeout_s=5)
    assert settings.effective_base_url == fault_server.base_url  # never the embedded model by accident
    llm = LLMClient(settings)
    yield llm
    await llm.close()


def _queue_count(prompt: Prompt) -> float:
    return REGISTRY.get_sample_value("newsdigest_llm_queue_seconds_count", {"prompt": prompt.ref}) or 0.0


def _queue_sum(prompt: Prompt) -> float:
    return REGISTRY.get_sample_value("newsdigest_llm_queue_seconds_sum", {"prompt": prompt.ref}) or 0.0


@pytest.mark.asyncio
async def test_the_wait_for_the_slot_is_queue_ms_not_latency_ms(
    one_slot: LLMClient, fault_server: FaultServer, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([ok(FACTS)])
    await one_slot.complete(prompt, messages)  # one-time client costs stay out of the timings
    fault_server.script([delay(DELAY_S, ok(FACTS)), delay(DELAY_S, ok(FACTS))])
    count, total = _queue_count(prompt), _queue_sum(prompt)

    first, second = await asyncio.gather(one_slot.complete(prompt, messages), one_slot.complete(prompt, messages))

    assert fault_server.max_in_flight == 1
    delay_ms = DELAY_S * 1000
    for usage in (first.usage, second.usage):  # each one's own model time: the delay, not the wait
        assert delay_ms <= usage.latency_ms < delay_ms + SLACK_MS, usage
    waited, direct = sorted((first.usage, second.usage), key=lambda u: u.queue_ms, reverse=True)
    assert delay_ms - SLACK_MS < waited.queue_ms < delay_ms + SLACK_MS, waited  # behind the other's whole call
    assert direct.queue_ms < SLACK_MS, direct
    # The histogram saw both waits, in seconds.
    assert _queue_count(prompt) == count + 2
    assert _queue_sum(prompt) - total == pytest.approx((waited.queue_ms + direct.queue_ms) / 1000, abs=0.01)


def test_usage_sums_queue_time_apart_from_latency() -> None:
    calls = [CallUsage(prompt="p@1", prompt_hash="h", model="m", mode="json_schema", latency_ms=400, queue_ms=0),
             CallUsage(prompt="p@1", prompt_hash="h", model="m", mode="json_schema", latency_ms=410, queue_ms=395)]

    total = Usage.of(calls)

    assert (total.requests, total.latency_ms, total.queue_ms) == (2, 810, 395)
