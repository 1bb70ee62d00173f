"""An own OpenAI-compatible server on this machine works out of the box: one call at a time, and a
timed-out call is not piled onto its queue again (tests/fake_openai.py plays the server)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from service.errors import LLMUnavailable
from service.llm.client import LLMClient
from service.prompts import PromptRegistry
from service.settings import Settings
from tests.fake_openai import FaultServer, delay, ok, status

pytestmark = pytest.mark.block_network(allowed_hosts=[r"127\.0\.0\.1$"])

PROMPT = PromptRegistry.load(Path(__file__).resolve().parents[2] / "prompts").get("key_facts")
MESSAGES = [{"role": "user", "content": "[1] The council approved the budget."}]
FACTS = {"facts": [{"claim": "The council approved the budget.", "sentences": [1]}]}


def own_server(fault_server: FaultServer, **overrides: Any) -> LLMClient:
    """The settings an operator writes for an own server: its URL and model, nothing else."""
    values: dict[str, Any] = {"llm_base_url": fault_server.base_url, "llm_model": "llama3.1:8b",
                              "llm_mode": "json_object", "llm_retry_initial_wait_s": 0, "llm_retry_max_wait_s": 0}
    return LLMClient(Settings(**{**values, **overrides}))


async def test_an_own_loopback_server_gets_one_call_at_a_time(fault_server: FaultServer) -> None:
    llm = own_server(fault_server)
    assert llm.settings.effective_max_concurrency == 1 and llm.settings.effective_timeout_s == 900.0
    fault_server.script([delay(0.2, ok(FACTS)) for _ in range(3)])
    try:
        await asyncio.gather(*(llm.complete(PROMPT, MESSAGES) for _ in range(3)))
    finally:
        await llm.close()
    assert fault_server.max_in_flight == 1


async def test_a_timed_out_call_is_not_queued_again_when_the_deadline_leaves_no_room(
    fault_server: FaultServer,
) -> None:
    # Scaled down from the defaults for a loopback endpoint (900 s timeout, 600 s deadline): the deadline
    # is shorter than one more timeout, so the abandoned request is left to finish alone.
    llm = own_server(fault_server, llm_timeout_s=0.3, llm_deadline_s=0.5, llm_max_attempts=4)
    fault_server.script([delay(1.0, ok(FACTS))])
    started = time.monotonic()
    try:
        with pytest.raises(LLMUnavailable, match=r"timed out after 0\.3 s") as caught:
            await llm.complete(PROMPT, MESSAGES)
    finally:
        await llm.close()
    assert time.monotonic() - started < 0.9
    assert len(fault_server.completions) == 1  # no second copy sent
    assert caught.value.usage.attempts == 1
    assert caught.value.usage.cost_usd is None


async def test_a_timed_out_call_is_retried_when_a_whole_attempt_still_fits(fault_server: FaultServer) -> None:
    llm = own_server(fault_server, llm_timeout_s=0.3, llm_deadline_s=5, llm_max_attempts=3)
    fault_server.script([delay(1.0, ok(FACTS)), ok(FACTS)])
    try:
        result = await llm.complete(PROMPT, MESSAGES)
    finally:
        await llm.close()
    assert result.usage.attempts == 2


def test_the_default_loopback_policy_never_retries_a_timeout_within_the_call() -> None:
    settings = Settings(llm_base_url="http://127.0.0.1:11434/v1")
    assert settings.effective_timeout_s > settings.llm_deadline_s  # 900 s > 600 s: a retry never fits
    hosted = Settings(llm_api_key="sk-test")
    assert 2 * hosted.effective_timeout_s <= hosted.llm_deadline_s  # 120 s: hosted calls keep their retries


async def test_other_failures_of_a_loopback_server_are_still_retried(fault_server: FaultServer) -> None:
    llm = own_server(fault_server, llm_max_attempts=3)
    fault_server.script([status(503), ok(FACTS)])
    try:
        result = await llm.complete(PROMPT, MESSAGES)
    finally:
        await llm.close()
    assert result.usage.attempts == 2
