"""A model's answer read: its JSON object, or why it cannot be used (refused, cut off, not a JSON object)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from service.errors import LLMOutputError, LLMRefusal, LLMTruncated
from service.llm.request import output_schema
from service.llm.schema import drop_added_nulls
from service.prompts import Prompt


@dataclass(frozen=True)
class Answer:
    #: The raw text: the message, or in tools mode the function call's arguments.
    content: str
    data: Any
    #: ``ok``, ``refused``, ``truncated`` or ``invalid``; anything but ``ok`` comes with ``error``.
    outcome: str
    error: LLMOutputError | None


def read_answer(prompt: Prompt, response: Any, *, tools: bool, strict: bool) -> Answer:
    """``strict``: the request's schema was the strict rewrite, whose nulls stand for left-out properties."""
    choice = response.choices[0] if response.choices else None
    message = choice.message if choice else None
    content = ""
    if message is not None:
        if tools and message.tool_calls:
            content = message.tool_calls[0].function.arguments or ""
        else:
            content = message.content or ""
    outcome: str = "ok"
    error: LLMOutputError | None = None
    if message is not None and getattr(message, "refusal", None):
        outcome, error = "refused", LLMRefusal(f"{prompt.ref}: the model refused: {message.refusal[:200]}")
    elif choice is not None and choice.finish_reason == "length":
        outcome, error = (
            "truncated",
            LLMTruncated(f"{prompt.ref}: answer cut off at max_tokens={prompt.meta.max_tokens}"),
        )
    data: Any = None
    if error is None:
        try:
            data = json.loads(content)
        except ValueError:
            outcome, error = "invalid", LLMOutputError(f"{prompt.ref}: the answer is not valid JSON")
        else:
            if not isinstance(data, dict):
                outcome, error = "invalid", LLMOutputError(f"{prompt.ref}: the answer is not a JSON object")
            elif strict:
                # The strict schema made optional properties nullable; a null there means "left out".
                data = drop_added_nulls(data, output_schema(prompt.output_type))
    return Answer(content=content, data=data, outcome=outcome, error=error)
