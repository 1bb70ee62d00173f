"""What one model call sends: the chat request for the client's mode, with the prompt's output schema.

In the strict modes (``json_schema``, and ``tools`` against OpenAI, whose function is then sent with
``strict: true``; ``LLM_STRICT_TOOLS``) the schema is rewritten into OpenAI's strict subset
(``service.llm.schema``); the limits it moves into descriptions are checked by the stages, which
validate every answer with the prompt's model. Elsewhere the full schema is sent: llama.cpp's server
compiles it, limits included, into a grammar, which the strict rewrite would loosen.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from service.llm.schema import strict_schema
from service.prompts import Prompt


@functools.cache
def output_schema(output_type: type[BaseModel]) -> dict[str, Any]:
    """A prompt's output schema, built once per type: pydantic builds it afresh on every call (~0.3 ms).
    Shared, so never mutated: the request is serialised, and ``strict_schema`` returns a new dict."""
    return output_type.model_json_schema()


@functools.cache
def _strict_output_schema(output_type: type[BaseModel]) -> dict[str, Any]:
    return strict_schema(output_schema(output_type))


def chat_request(prompt: Prompt, messages: list[dict[str, str]], *, model: str, mode: str, strict: bool,
                 temperature: float | None) -> dict[str, Any]:
    """The arguments of ``chat.completions.create``; ``temperature`` overrides the prompt's own."""
    schema = output_schema(prompt.output_type)
    request: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": prompt.meta.max_tokens,
        "temperature": prompt.meta.temperature if temperature is None else temperature,
    }
    if mode == "json_schema":
        request["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": prompt.meta.name, "schema": _strict_output_schema(prompt.output_type),
                            "strict": True},
        }
    elif mode == "json_object":
        # llama-cpp-python turns this schema into a grammar, so the answer parses by construction;
        # the full schema (lengths and counts included) constrains it there.
        request["response_format"] = {"type": "json_object", "schema": schema}
    else:
        function: dict[str, Any] = {"name": prompt.meta.name, "description": prompt.meta.description}
        if strict:
            function.update(parameters=_strict_output_schema(prompt.output_type), strict=True)
        else:
            # llama.cpp and the like compile the full schema, limits included, into a grammar.
            function["parameters"] = schema
        request["tools"] = [{"type": "function", "function": function}]
        request["tool_choice"] = {"type": "function", "function": {"name": prompt.meta.name}}
    return request
