"""service.llm.client against a real socket: the real openai client talks to tests/fake_openai.py.

Nothing here mocks the client. Each test scripts the server's answers, makes one or two real
``LLMClient.complete`` calls and checks what a caller would notice: the error raised and its
message, how many HTTP attempts reached the server, and the usage that was reported.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel

from schemas import ArticleIn
from schemas.facts import KeyFactsDraft
from service.errors import LLMError, LLMHTTPError, LLMOutputError, LLMRefusal, LLMTruncated, LLMUnavailable
from service.llm.client import LLMClient, strict_schema
from service.llm.schema import strict_problems
from service.pipeline.extract import prompt_context
from service.pipeline.text import prepare
from service.prompts import Prompt, PromptRegistry
from service.settings import Settings
from tests.conftest import MakeLLM
from tests.fake_openai import (
    MALFORMED_CONTENT,
    REFUSAL_TEXT,
    TRUNCATED_CONTENT,
    Fault,
    FaultServer,
    closed_port_url,
    delay,
    insufficient_quota,
    length,
    malformed,
    ok,
    refusal,
    reset,
    status,
    tool_call,
)

# Only the fault server on 127.0.0.1 is reachable, with or without --block-network.
pytestmark = pytest.mark.block_network(allowed_hosts=[r"127\.0\.0\.1$"])

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
API_KEY = "test-key"
FACTS = {"facts": [{"claim": "The city council approved a budget of $4.2 million.", "sentences": [1]}]}
USAGE = {"prompt_tokens": 321, "completion_tokens": 45, "cached_tokens": 128}

@pytest.fixture(scope="module")
def prompt() -> Prompt:
    return PromptRegistry.load(PROMPTS_DIR).get("key_facts")


@pytest.fixture(scope="module")
def messages(prompt: Prompt) -> list[dict[str, str]]:
    article = prepare(ArticleIn(
        outlet="Example Times", title="Council passes budget",
        body="The city council approved a budget of $4.2 million on Monday. The vote was 7 to 2. "
             "Mayor Jane Doe said the money will pay for three new schools.",
    ), max_chars=10_000)
    return prompt.messages(**prompt_context(article))


@pytest.fixture
def llm_settings() -> dict[str, Any]:
    """What ``make_llm`` (tests/conftest.py: three attempts, 0.5 s, no waits) builds every client here with."""
    return {"llm_api_key": API_KEY, "llm_model": "gpt-4o-mini", "llm_mode": "json_schema"}


async def warm_up(llm: LLMClient, server: FaultServer, prompt: Prompt, messages: list[dict[str, str]]) -> None:
    """One call first, so one-time client costs (platform probe, model classes) stay out of timings."""
    server.script([ok(FACTS)])
    await llm.complete(prompt, messages)


def retries(prompt: Prompt, error_type: str) -> float:
    labels = {"prompt": prompt.ref, "error_type": error_type}
    return REGISTRY.get_sample_value("newsdigest_llm_retries_total", labels) or 0.0


def object_nodes(node: Any) -> list[dict[str, Any]]:
    """Every JSON Schema node of type object (property names are not mistaken for keywords)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append(node)
        for key, value in node.items():
            children = value.values() if key in ("properties", "$defs") and isinstance(value, dict) else [value]
            for child in children:
                found += object_nodes(child)
    elif isinstance(node, list):
        for item in node:
            found += object_nodes(item)
    return found


# --- a usable answer, in each structured-output mode -------------------------------------------


@pytest.mark.asyncio
async def test_json_schema_mode_sends_a_strict_schema_and_parses_the_answer(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([ok(FACTS, usage=USAGE)])

    result = await make_llm(llm_mode="json_schema").complete(prompt, messages)

    (sent,) = fault_server.completions
    body = sent.json
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == messages
    assert body["max_tokens"] == prompt.meta.max_tokens
    assert body["temperature"] == prompt.meta.temperature
    assert "tools" not in body
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "key_facts"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    objects = object_nodes(schema)
    assert len(objects) == 2  # KeyFactsDraft and FactDraft
    for node in objects:
        assert node["additionalProperties"] is False
        assert sorted(node["required"]) == sorted(node["properties"])
    assert '"default"' not in json.dumps(schema)
    assert result.data == FACTS
    assert KeyFactsDraft.model_validate(result.data).facts[0].sentences == [1]


@pytest.mark.parametrize("mode", ["json_schema", "json_object", "tools"])
@pytest.mark.asyncio
async def test_usage_comes_from_the_server_in_every_mode(
    mode: str, fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([tool_call(FACTS, usage=USAGE) if mode == "tools" else ok(FACTS, usage=USAGE)])

    result = await make_llm(llm_mode=mode).complete(prompt, messages)

    assert result.data == FACTS
    assert json.loads(result.content) == FACTS
    usage = result.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cached_tokens) == (321, 45, 128)
    assert usage.attempts == 1
    assert usage.outcome == "ok"
    assert usage.finish_reason == "stop"
    assert usage.mode == mode
    assert usage.prompt == prompt.ref
    assert usage.prompt_hash == prompt.sha256
    assert usage.model == "gpt-4o-mini"
    assert usage.resolved_model == "gpt-4o-mini-fault-server"


@pytest.mark.asyncio
async def test_json_object_mode_sends_the_schema_in_response_format(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([ok(FACTS)])

    await make_llm(llm_mode="json_object").complete(prompt, messages)

    body = fault_server.completions[0].json
    assert body["response_format"] == {"type": "json_object", "schema": KeyFactsDraft.model_json_schema()}
    assert "tools" not in body and "tool_choice" not in body


@pytest.mark.asyncio
async def test_tools_mode_forces_the_prompt_function_and_reads_its_arguments(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([tool_call(FACTS)])

    result = await make_llm(llm_mode="tools").complete(prompt, messages)

    body = fault_server.completions[0].json
    assert "response_format" not in body
    # Not OpenAI: the full schema, which a local server compiles into a grammar with its limits.
    assert body["tools"] == [{"type": "function", "function": {
        "name": "key_facts", "description": prompt.meta.description,
        "parameters": KeyFactsDraft.model_json_schema()}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "key_facts"}}
    assert result.data == FACTS


@pytest.mark.asyncio
async def test_strict_tools_send_the_strict_schema(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([tool_call(FACTS)])

    result = await make_llm(llm_mode="tools", llm_strict_tools=True).complete(prompt, messages)

    (tool,) = fault_server.completions[0].json["tools"]
    assert tool == {"type": "function", "function": {
        "name": "key_facts", "description": prompt.meta.description,
        "parameters": strict_schema(KeyFactsDraft.model_json_schema()), "strict": True}}
    assert strict_problems(tool["function"]["parameters"]) == []
    assert result.data == FACTS


@pytest.mark.parametrize(("url", "strict"), [
    ("https://api.openai.com/v1", True), ("https://my-resource.openai.azure.com/openai/v1", True),
    ("http://127.0.0.1:8765/v1", False), ("https://vllm.internal:8000/v1", False),
])
def test_tools_are_strict_only_where_openai_serves_them(url: str, strict: bool) -> None:
    assert Settings(llm_base_url=url, llm_mode="tools").effective_strict_tools is strict
    assert LLMClient(Settings(llm_base_url=url, llm_mode="tools")).strict is strict


# --- retried failures: 429, 5xx, timeouts, connection errors ---------------------------------


@pytest.mark.parametrize("headers", [{"Retry-After": "0"}, {"retry-after-ms": "0"}], ids=["seconds", "ms"])
@pytest.mark.asyncio
async def test_429_with_retry_after_is_retried(
    headers: dict[str, str], fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt,
    messages: list[dict[str, str]],
) -> None:
    rate_limited = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    fault_server.script([status(429, body=rate_limited, headers=headers), ok(FACTS, usage=USAGE)])
    before = retries(prompt, "LLMHTTPError")

    result = await make_llm().complete(prompt, messages)

    assert result.data == FACTS
    assert result.usage.attempts == 2
    assert result.usage.input_tokens == USAGE["prompt_tokens"]  # the answer's tokens, not the 429's
    assert len(fault_server.completions) == 2
    assert retries(prompt, "LLMHTTPError") == before + 1


@pytest.mark.parametrize("retry_after", ["5", "date"])
@pytest.mark.asyncio
async def test_retry_after_is_honoured_up_to_the_cap(
    retry_after: str, fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt,
    messages: list[dict[str, str]],
) -> None:
    llm = make_llm(llm_retry_max_wait_s=0.2)
    await warm_up(llm, fault_server, prompt, messages)
    value = formatdate(time.time() + 5, usegmt=True) if retry_after == "date" else retry_after
    fault_server.script([status(429, headers={"Retry-After": value}), ok(FACTS)])

    started = time.monotonic()
    result = await llm.complete(prompt, messages)
    elapsed = time.monotonic() - started

    assert result.usage.attempts == 2
    assert 0.2 <= elapsed < 1.0  # waited, but 0.2 s (the cap), not the 5 s asked for


@pytest.mark.asyncio
async def test_5xx_are_retried_until_an_answer(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([status(500), status(502), ok(FACTS)])

    result = await make_llm().complete(prompt, messages)

    assert result.data == FACTS
    assert result.usage.attempts == 3
    assert len(fault_server.completions) == 3


@pytest.mark.asyncio
async def test_503_forever_gives_up_after_max_attempts(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([status(503)] * 5)
    before = retries(prompt, "LLMHTTPError")

    with pytest.raises(LLMHTTPError) as caught:
        await make_llm().complete(prompt, messages)

    err = caught.value
    assert len(fault_server.completions) == 3
    assert fault_server.remaining == 2
    assert err.status_code == 503
    assert str(err) == "model endpoint answered 503"
    assert err.problem()["llm_status"] == 503
    assert err.problem()["status"] == 502
    assert err.usage.attempts == 3
    assert err.usage.outcome == "error"
    assert (err.usage.input_tokens, err.usage.output_tokens) == (0, 0)
    assert retries(prompt, "LLMHTTPError") == before + 2  # 3 attempts = 2 retries


@pytest.mark.asyncio
async def test_read_timeout_is_retried(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([delay(2.0), ok(FACTS)])
    before = retries(prompt, "LLMUnavailable")

    result = await make_llm(llm_timeout_s=0.3).complete(prompt, messages)

    assert result.data == FACTS
    assert result.usage.attempts == 2
    assert retries(prompt, "LLMUnavailable") == before + 1


@pytest.mark.asyncio
async def test_read_timeouts_end_in_llm_unavailable(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([delay(2.0)] * 3 + [ok(FACTS)])

    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="timed out") as caught:
        await make_llm(llm_timeout_s=0.3).complete(prompt, messages)

    assert time.monotonic() - started < 1.8  # three 0.3 s timeouts, no 2 s answer awaited
    assert len(fault_server.completions) == 3
    assert fault_server.remaining == 1
    assert caught.value.usage.attempts == 3
    assert caught.value.problem()["status"] == 503


@pytest.mark.asyncio
async def test_connection_reset_ends_in_llm_unavailable(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([reset()] * 3 + [ok(FACTS)])

    with pytest.raises(LLMUnavailable, match="cannot reach the model endpoint") as caught:
        await make_llm().complete(prompt, messages)

    assert len(fault_server.completions) == 3
    assert caught.value.usage.attempts == 3
    assert caught.value.usage.outcome == "error"


@pytest.mark.asyncio
async def test_connection_reset_then_answer_succeeds(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([reset(), ok(FACTS)])

    result = await make_llm().complete(prompt, messages)

    assert result.usage.attempts == 2


@pytest.mark.asyncio
async def test_nothing_listening_is_unavailable_quickly(
    make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="cannot reach the model endpoint") as caught:
        await make_llm(base_url=closed_port_url()).complete(prompt, messages)

    assert time.monotonic() - started < 1.0
    assert caught.value.usage.attempts == 3
    # One line naming the endpoint, so an operator knows which setting to look at.
    assert str(caught.value).startswith(f"cannot reach the model endpoint {closed_port_url().rsplit(':', 1)[0]}")


@pytest.mark.asyncio
async def test_errors_name_the_endpoint_without_credentials(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([delay(2.0)])
    secret_url = fault_server.base_url.replace("http://", "http://user:sekret@")

    with pytest.raises(LLMUnavailable) as caught:
        await make_llm(base_url=secret_url, llm_timeout_s=0.3, llm_deadline_s=0.5).complete(prompt, messages)

    assert str(caught.value) == (f"the model endpoint {fault_server.base_url} timed out after 0.3 s "
                                 "(NEWSDIGEST_LLM_TIMEOUT_S)")
    assert "sekret" not in str(caught.value)


@pytest.mark.asyncio
async def test_a_nonsense_retry_after_does_not_stall_the_call(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([status(429, headers={"retry-after-ms": "NaN"}), ok(FACTS)])

    result = await asyncio.wait_for(make_llm(llm_retry_max_wait_s=0.2).complete(prompt, messages), timeout=1.0)

    assert result.usage.attempts == 2


# --- final failures: not retried ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_insufficient_quota_is_final(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([insufficient_quota(), ok(FACTS)])

    with pytest.raises(LLMHTTPError) as caught:
        await make_llm().complete(prompt, messages)

    err = caught.value
    assert len(fault_server.completions) == 1
    assert fault_server.remaining == 1
    assert (err.status_code, err.code, err.retryable) == (429, "insufficient_quota", False)
    assert str(err) == "model endpoint answered 429 (insufficient_quota)"
    assert err.usage.attempts == 1


@pytest.mark.parametrize("code", [400, 401, 404, 422])
@pytest.mark.asyncio
async def test_client_errors_are_final(
    code: int, fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([status(code), ok(FACTS)])

    with pytest.raises(LLMHTTPError) as caught:
        await make_llm().complete(prompt, messages)

    assert len(fault_server.completions) == 1
    assert caught.value.status_code == code
    assert caught.value.usage.attempts == 1


@pytest.mark.asyncio
async def test_malformed_json_is_an_output_error_with_the_content_kept(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([malformed(usage=USAGE), ok(FACTS)])
    before = retries(prompt, "LLMOutputError")

    with pytest.raises(LLMOutputError, match="not valid JSON") as caught:
        await make_llm().complete(prompt, messages)

    err = caught.value
    assert type(err) is LLMOutputError
    assert err.content == MALFORMED_CONTENT
    assert err.usage.outcome == "invalid"
    assert err.usage.attempts == 1
    assert (err.usage.input_tokens, err.usage.output_tokens) == (USAGE["prompt_tokens"], USAGE["completion_tokens"])
    assert len(fault_server.completions) == 1
    assert retries(prompt, "LLMOutputError") == before


@pytest.mark.asyncio
async def test_json_that_is_not_an_object_is_an_output_error(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([ok('[{"claim": "x", "sentences": [1]}]')])

    with pytest.raises(LLMOutputError, match="not a JSON object") as caught:
        await make_llm().complete(prompt, messages)

    assert caught.value.usage.outcome == "invalid"


@pytest.mark.asyncio
async def test_cut_off_answer_is_truncated(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([length(), ok(FACTS)])

    with pytest.raises(LLMTruncated, match=f"max_tokens={prompt.meta.max_tokens}") as caught:
        await make_llm().complete(prompt, messages)

    err = caught.value
    assert err.content == TRUNCATED_CONTENT
    assert (err.usage.outcome, err.usage.finish_reason, err.usage.attempts) == ("truncated", "length", 1)
    assert err.problem()["type"].endswith("/llm-truncated")
    assert len(fault_server.completions) == 1


@pytest.mark.asyncio
async def test_refusal_is_reported_as_such(
    fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([refusal(), ok(FACTS)])

    with pytest.raises(LLMRefusal) as caught:
        await make_llm().complete(prompt, messages)

    err = caught.value
    assert REFUSAL_TEXT in str(err)
    assert (err.usage.outcome, err.usage.attempts) == ("refused", 1)
    assert len(fault_server.completions) == 1


# --- the API key --------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [
    status(401, body={"error": {"message": f"Incorrect API key provided: {API_KEY}.", "type": "invalid_request_error",
                                "code": "invalid_api_key"}}),
    status(500, body={"error": {"message": f"upstream rejected key {API_KEY}", "code": None}}),
    reset(),
], ids=["401-echoing-key", "500-echoing-key", "reset"])
@pytest.mark.asyncio
async def test_key_is_sent_as_bearer_and_never_shown_in_errors(
    fault: Fault, fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt, messages: list[dict[str, str]]
) -> None:
    fault_server.script([fault] * 3)

    with pytest.raises(LLMError) as caught:
        await make_llm().complete(prompt, messages)

    assert fault_server.completions
    assert {r.headers["authorization"] for r in fault_server.completions} == {f"Bearer {API_KEY}"}
    err = caught.value
    assert API_KEY not in str(err)
    assert API_KEY not in json.dumps(err.problem())
    assert API_KEY not in repr(err.usage)


# --- concurrency ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("concurrency", "serial"), [(1, True), (2, False)])
@pytest.mark.asyncio
async def test_semaphore_bounds_concurrent_calls(
    concurrency: int, serial: bool, fault_server: FaultServer, make_llm: MakeLLM, prompt: Prompt,
    messages: list[dict[str, str]],
) -> None:
    llm = make_llm(llm_max_concurrency=concurrency, llm_timeout_s=5)
    await warm_up(llm, fault_server, prompt, messages)
    fault_server.script([delay(0.3, ok(FACTS)), delay(0.3, ok(FACTS))])

    started = time.monotonic()
    results = await asyncio.gather(llm.complete(prompt, messages), llm.complete(prompt, messages))
    elapsed = time.monotonic() - started

    assert [r.data for r in results] == [FACTS, FACTS]
    assert fault_server.max_in_flight == concurrency  # what the server saw, independent of timing
    if serial:
        assert elapsed >= 0.6
    else:
        assert elapsed < 0.55


# --- the fault server itself ---------------------------------------------------------------------


def test_fault_server_lists_models_and_answers_unscripted_requests_with_503(fault_server: FaultServer) -> None:
    with urllib.request.urlopen(f"{fault_server.base_url}/models", timeout=5) as response:
        models = json.load(response)
    assert models["object"] == "list"
    assert models["data"][0]["object"] == "model"
    assert fault_server.requests[0].method == "GET"
    assert fault_server.unscripted == 0


# --- the schema sent in json_schema mode ---------------------------------------------------------


class _Headline(BaseModel):
    title: str
    default: bool


def test_strict_schema_keeps_properties_named_like_keywords() -> None:
    schema = strict_schema(_Headline.model_json_schema())

    assert sorted(schema["properties"]) == ["default", "title"]
    assert sorted(schema["required"]) == ["default", "title"]


@pytest.mark.asyncio
async def test_strict_modes_turn_the_nulls_of_optional_fields_into_defaults(
    fault_server: FaultServer, make_llm: MakeLLM, messages: list[dict[str, str]]
) -> None:
    sentiment = PromptRegistry.load(PROMPTS_DIR).get("sentiment")
    answer = {"overall": "positive", "score": 0.5, "sentences": [1], "entities": None}
    fault_server.script([ok(answer), tool_call(answer), ok(answer)])

    for mode in ("json_schema", "tools"):
        result = await make_llm(llm_mode=mode, llm_strict_tools=True).complete(sentiment, messages)
        assert result.data == {"overall": "positive", "score": 0.5, "sentences": [1]}
        assert sentiment.output_type.model_validate(result.data).model_dump()["entities"] == []
    # json_object sends the model's own schema (no nullable rewrite), so the answer is left as it came.
    raw = await make_llm(llm_mode="json_object").complete(sentiment, messages)
    assert raw.data == answer


def test_a_key_alone_points_the_client_at_openai() -> None:
    client = LLMClient(Settings(llm_api_key=API_KEY))
    assert str(client._client.base_url) == "https://api.openai.com/v1/"
    assert (client.model, client.mode, client.url) == ("gpt-4o-mini", "json_schema", "https://api.openai.com/v1")


def test_settings_accept_field_names_for_the_endpoint() -> None:
    settings = Settings(llm_base_url="http://127.0.0.1:1/v1", llm_api_key=API_KEY)

    assert settings.effective_base_url == "http://127.0.0.1:1/v1"
    assert settings.llm_api_key is not None and settings.llm_api_key.get_secret_value() == API_KEY
