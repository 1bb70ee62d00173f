"""Which structured-output shapes llama-cpp-python's OpenAI-compatible server (the embedded model,
``python -m llama_cpp.server``) honours: one short call per mode, recorded from it and replayed here.

Measured on llama-cpp-python 0.3.36 with the embedded Qwen2.5-Coder 1.5B (``make record`` re-records):

* ``json_object`` with the schema in ``response_format`` (the embedded default): honoured. The server
  compiles the full schema, limits included, into a grammar, so the answer parses and fits by construction.
* ``tools`` with a forced ``tool_choice``: honoured. The function's parameters become the grammar and the
  answer comes back as the tool call's arguments. The full schema is sent (``LLM_STRICT_TOOLS`` is off
  for anything but OpenAI): given the strict rewrite, the server's grammar would lose the limits moved
  into descriptions and the items of nullable arrays (``["array", "null"]`` becomes any array).
* ``json_schema`` (OpenAI's strict structured outputs): refused. The server's request model allows only
  ``text`` and ``json_object`` as ``response_format.type`` and answers the validation error with a 500
  (``internal_server_error``), which a client takes for a server fault; so the embedded model refuses
  ``NEWSDIGEST_LLM_MODE=json_schema`` at start-up (``Settings``), and an own llama.cpp server should be
  used in ``json_object`` or ``tools`` mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas import ArticleIn
from schemas.facts import KeyFactsDraft
from service.errors import LLMHTTPError
from service.llm.client import LLMClient
from service.pipeline.extract import prompt_context
from service.pipeline.text import prepare
from service.prompts import Prompt, PromptRegistry
from service.settings import LOCAL_LLM_MODEL, Settings
from tests.conftest import RECORDING_BASE_URL, RECORDING_KEY

pytestmark = [pytest.mark.vcr, pytest.mark.block_network(allowed_hosts=[r"127\.0\.0\.1$"])]

PROMPT: Prompt = PromptRegistry.load(Path(__file__).resolve().parents[2] / "prompts").get("key_facts")
ARTICLE = prepare(ArticleIn(outlet="Example Times", title="Council passes budget",
                            body="The city council approved a budget of $4.2 million on Monday. The vote was 7 to 2."),
                  max_chars=10_000)


def client(mode: str, **overrides: Any) -> LLMClient:
    values: dict[str, Any] = {"llm_base_url": RECORDING_BASE_URL, "llm_api_key": RECORDING_KEY,
                              "llm_model": LOCAL_LLM_MODEL, "llm_mode": mode, "llm_max_attempts": 1,
                              "llm_timeout_s": 600, "llm_retry_initial_wait_s": 0}
    return LLMClient(Settings(**{**values, **overrides}))


@pytest.mark.parametrize("mode", ["json_object", "tools"])
async def test_the_server_honours_the_schema(mode: str) -> None:
    llm = client(mode)
    try:
        result = await llm.complete(PROMPT, PROMPT.messages(**prompt_context(ARTICLE)))
    finally:
        await llm.close()
    draft = KeyFactsDraft.model_validate(result.data)  # the stage's own validation, limits included
    assert draft.facts
    assert all(1 <= n <= len(ARTICLE.sentences) for fact in draft.facts for n in fact.sentences)
    assert result.usage.outcome == "ok" and result.usage.input_tokens > 0
    assert result.usage.cost_usd is None  # an own server's model is not in the price table


async def test_the_server_refuses_json_schema_mode_with_a_500() -> None:
    llm = client("json_schema")
    try:
        with pytest.raises(LLMHTTPError) as caught:
            await llm.complete(PROMPT, PROMPT.messages(**prompt_context(ARTICLE)))
    finally:
        await llm.close()
    assert caught.value.status_code == 500
    assert str(caught.value) == "model endpoint answered 500"


def test_the_embedded_model_refuses_json_schema_mode_at_start_up() -> None:
    with pytest.raises(ValueError, match="NEWSDIGEST_LLM_MODE=json_schema"):
        Settings(llm_mode="json_schema")
    assert Settings(llm_mode="tools").effective_mode == "tools"
