"""A model double for the pipeline's unit tests: answers computed from what it is sent."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from schemas import CallUsage
from service.llm.port import Completion
from service.prompts import Prompt

Answerer = Callable[[Prompt, list[dict[str, str]]], dict[str, Any]]
_NUMBERED = re.compile(r"^\[(\d+)\] (.*)$")


class FakeModel:
    """Each call is answered by ``answer(prompt, messages)``; every call's messages are kept."""

    model = "fake"
    mode = "json_object"

    def __init__(self, answer: Answerer) -> None:
        self.answer = answer
        self.sent: list[tuple[str, list[dict[str, str]]]] = []

    async def complete(self, prompt: Prompt, messages: list[dict[str, str]]) -> Completion:
        self.sent.append((prompt.ref, messages))
        data = self.answer(prompt, messages)
        usage = CallUsage(prompt=prompt.ref, prompt_hash=prompt.sha256, model=self.model, mode=self.mode,
                          input_tokens=10, output_tokens=5)
        return Completion(data=data, content=json.dumps(data), usage=usage)


def scripted(*answers: dict[str, Any]) -> FakeModel:
    """Answers in order, whatever is asked."""
    queue = list(answers)
    return FakeModel(lambda prompt, messages: queue.pop(0))


def shown_sentences(messages: list[dict[str, str]]) -> dict[int, str]:
    """The numbered sentences an article prompt shows the model: number -> text."""
    block = messages[1]["content"].split("TASK:")[0]
    return {int(m.group(1)): m.group(2) for line in block.splitlines() if (m := _NUMBERED.match(line))}
