"""Cost per call from the dated price table, None where the price is unknown, and cost per digest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from schemas import CallUsage, Usage
from service.llm import costs
from service.llm.client import LLMClient
from service.llm.usage import Attempts
from service.prompts import PromptRegistry
from service.settings import Settings
from tests.fake_openai import FaultServer, ok, status

pytestmark = pytest.mark.block_network(allowed_hosts=[r"127\.0\.0\.1$"])

PROMPT = PromptRegistry.load(Path(__file__).resolve().parents[2] / "prompts").get("key_facts")
MESSAGES = [{"role": "user", "content": "[1] The council approved the budget."}]
FACTS = {"facts": [{"claim": "The council approved the budget.", "sentences": [1]}]}


def test_the_table_is_dated_and_pins_known_prices() -> None:
    assert costs.PRICES_AS_OF >= "2025-01-01"
    assert costs.PRICES["gpt-4o-mini"] == costs.Price(input=0.15, cached_input=0.075, output=0.60)
    assert costs.PRICES["gpt-4.1-mini"] == costs.Price(input=0.40, cached_input=0.10, output=1.60)
    for price in costs.PRICES.values():
        assert 0 < price.cached_input <= price.input < price.output


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-4o-mini", "gpt-4o-mini"), ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"), ("gpt-4o-2024-08-06", "gpt-4o"),
    ("GPT-4.1-mini", "gpt-4.1-mini"), ("qwen2.5-coder-1.5b-instruct-q4", None), ("gpt-4o-mini-fault-server", None),
    ("my-azure-deployment", None), ("", None), (None, None),
])
def test_models_and_dated_snapshots_are_priced(model: str | None, expected: str | None) -> None:
    assert costs.price_of(model) == (costs.PRICES[expected] if expected else None)


def test_a_calls_cost_bills_cached_tokens_at_the_cached_rate() -> None:
    # gpt-4o-mini: 1,000,000 input of which 400,000 cached, 100,000 output.
    dollars = costs.call_cost(model="gpt-4o-mini", resolved_model="gpt-4o-mini-2024-07-18",
                              input_tokens=1_000_000, output_tokens=100_000, cached_tokens=400_000)
    assert dollars == pytest.approx(600_000 * 0.15e-6 + 400_000 * 0.075e-6 + 100_000 * 0.60e-6)
    # An unknown answering model is priced as the model asked for; neither known: unknown.
    assert costs.call_cost(model="gpt-4o-mini", resolved_model="weird", input_tokens=1_000_000,
                           output_tokens=0) == pytest.approx(0.15)
    assert costs.call_cost(model="local", resolved_model=None, input_tokens=10, output_tokens=10) is None


def _usage(cost: float | None) -> CallUsage:
    return CallUsage(prompt="digest@3", prompt_hash="h", model="gpt-4o-mini", mode="json_schema", cost_usd=cost)


def test_a_digests_cost_is_the_sum_of_its_calls_or_unknown() -> None:
    assert Usage.of([_usage(0.001), _usage(0.002)]).cost_usd == pytest.approx(0.003)
    assert Usage.of([_usage(0.001), _usage(None)]).cost_usd is None
    assert Usage.of([_usage(None), _usage(0.001)]).cost_usd is None
    assert Usage.of([]).cost_usd == 0.0  # everything came from the cache


def _client(fault_server: FaultServer, **overrides: Any) -> LLMClient:
    values: dict[str, Any] = {"llm_base_url": fault_server.base_url, "llm_api_key": "test-key",
                              "llm_model": "gpt-4o-mini", "llm_mode": "json_schema", "llm_max_attempts": 2,
                              "llm_retry_initial_wait_s": 0, "llm_retry_max_wait_s": 0}
    return LLMClient(Settings(**{**values, **overrides}))


async def test_the_client_fills_cost_usd_and_counts_dollars(fault_server: FaultServer) -> None:
    labels = {"prompt": PROMPT.ref, "model": "gpt-4o-mini"}
    before = REGISTRY.get_sample_value("newsdigest_llm_cost_usd_total", labels) or 0.0
    fault_server.script([ok(FACTS, usage={"prompt_tokens": 2_000, "completion_tokens": 100, "cached_tokens": 1_000})])
    llm = _client(fault_server)
    try:
        result = await llm.complete(PROMPT, MESSAGES)
    finally:
        await llm.close()
    expected = (1_000 * 0.15 + 1_000 * 0.075 + 100 * 0.60) / 1_000_000
    assert result.usage.cost_usd == pytest.approx(expected)
    after = REGISTRY.get_sample_value("newsdigest_llm_cost_usd_total", labels)
    assert after == pytest.approx(before + expected)


async def test_an_unpriced_model_costs_none_and_a_refused_call_nothing(fault_server: FaultServer) -> None:
    fault_server.script([ok(FACTS), status(400)])
    unpriced = _client(fault_server, llm_model="llama3.1:8b")
    priced = _client(fault_server)
    try:
        assert (await unpriced.complete(PROMPT, MESSAGES)).usage.cost_usd is None
        with pytest.raises(Exception) as caught:
            await priced.complete(PROMPT, MESSAGES)
    finally:
        await unpriced.close()
        await priced.close()
    assert caught.value.usage.cost_usd == 0.0  # type: ignore[attr-defined]  # a 400 is not billed


def test_the_embedded_model_is_never_priced() -> None:
    llm = LLMClient(Settings(llm_model="gpt-4o-mini"))  # no endpoint, no key: the embedded model, whatever its name
    assert llm.settings.uses_local_llm
    assert llm._usage(PROMPT, Attempts(), None, outcome="error").cost_usd is None
