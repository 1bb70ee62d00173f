"""The model as the pipeline sees it: ``complete(prompt, messages)`` answering a parsed JSON object.

``service.llm.client.LLMClient`` is the real one; tests pass their own. Kept apart from the client
so that a stage can name the port without importing openai, tenacity or the settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from schemas import CallUsage
from service.prompts import Prompt


@dataclass(frozen=True)
class Completion:
    """A usable answer: the parsed JSON object and what it cost."""

    data: dict[str, Any]
    content: str
    usage: CallUsage


class Completer(Protocol):
    """What a stage needs of a model client."""

    @property
    def model(self) -> str: ...

    @property
    def mode(self) -> str: ...

    async def complete(self, prompt: Prompt, messages: list[dict[str, str]]) -> Completion: ...
