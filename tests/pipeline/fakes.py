"""A model double for the pipeline's unit tests, in process: answers computed from what it is sent.

The real client is tested against the fault server (tests/fake_openai.py); these tests pin the
service's own rules, so the stages get this double injected instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from schemas import CallUsage
from service.errors import LLMOutputError
from service.llm.port import Completion
from service.prompts import Prompt
from tests.fake_openai import numbered_lines

Answer = dict[str, Any] | LLMOutputError
Answerer = Callable[[Prompt, list[dict[str, str]]], Answer]


class FakeModel:
    """Each call is answered by ``answer(prompt, messages)`` (an error is raised, carrying the call's
    usage); every call's prompt and messages are kept."""

    model = "fake"
    mode = "json_object"

    def __init__(self, answer: Answerer) -> None:
        self.answer = answer
        self.sent: list[tuple[str, list[dict[str, str]]]] = []

    @property
    def messages(self) -> list[list[dict[str, str]]]:
        """The messages of every call, in order."""
        return [messages for _, messages in self.sent]

    async def complete(self, prompt: Prompt, messages: list[dict[str, str]]) -> Completion:
        self.sent.append((prompt.ref, messages))
        data = self.answer(prompt, messages)
        usage = CallUsage(prompt=prompt.ref, prompt_hash=prompt.sha256, model=self.model, mode=self.mode,
                          input_tokens=10, output_tokens=5)
        if isinstance(data, LLMOutputError):
            data.usage = usage
            raise data
        return Completion(data=data, content=json.dumps(data), usage=usage)


def scripted(*answers: Answer) -> FakeModel:
    """Answers (or errors) in order, whatever is asked."""
    queue = list(answers)
    return FakeModel(lambda prompt, messages: queue.pop(0))


def shown_sentences(messages: list[dict[str, str]]) -> dict[int, str]:
    """The numbered sentences an article prompt shows the model: number -> text."""
    return dict(numbered_lines(messages[1]["content"]))
