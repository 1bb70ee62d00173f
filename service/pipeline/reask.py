"""One question to the model and at most one re-ask, the same loop for every stage.

A stage hands in a ``check`` that turns an answer into what it could use and the problems it
found, one line each. When there are problems, the model is asked once more with the listing and
the stage's instruction (as pydantic-ai's ``RetryPromptPart`` does); each round's result goes back
to the stage, which decides what to keep. An endpoint failure propagates; an unusable answer
(invalid JSON, refusal, cut off) is a problem like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from schemas import PromptProvenance
from service.errors import LLMOutputError, LLMTruncated
from service.llm.port import Completer
from service.prompts import Prompt

T = TypeVar("T")

#: Re-asks per prompt and article: one, as a second wrong answer rarely becomes right on a third.
REASKS = 1
REASK_WHOLE = "Answer again with the whole corrected JSON object."


@dataclass
class Answer:
    data: dict[str, Any] | None
    content: str
    problem: str | None  # why the whole answer is unusable, if it is


@dataclass
class Checked(Generic[T]):
    """What a check made of one answer."""

    value: T
    problems: list[str] = field(default_factory=list)
    instruction: str = REASK_WHOLE


async def ask_model(llm: Completer, prompt: Prompt, messages: list[dict[str, str]], prov: PromptProvenance) -> Answer:
    """One call, its usage recorded in ``prov``; an unusable answer comes back as a problem."""
    try:
        completion = await llm.complete(prompt, messages)
    except LLMOutputError as exc:
        prov.calls.append(exc.usage)
        hint = " Give fewer, shorter items." if isinstance(exc, LLMTruncated) else ""
        return Answer(None, exc.content or "", f"{exc.detail}.{hint}")
    prov.calls.append(completion.usage)
    return Answer(completion.data, completion.content, None)


def reask_messages(
    messages: list[dict[str, str]], answer: Answer, problems: list[str], instruction: str
) -> list[dict[str, str]]:
    listing = "\n".join(f"- {p}" for p in problems)
    text = f"Your answer has these problems:\n{listing}\n{instruction}\nFix the errors and try again."
    return [*messages, {"role": "assistant", "content": answer.content}, {"role": "user", "content": text}]


async def ask_checked(
    llm: Completer,
    prompt: Prompt,
    messages: list[dict[str, str]],
    prov: PromptProvenance,
    check: Callable[[Answer], Checked[T]],
) -> list[Checked[T]]:
    """Every round's checked result, first to last; re-asks are counted in ``prov.reasks``."""
    answer = await ask_model(llm, prompt, messages, prov)
    rounds = [check(answer)]
    while rounds[-1].problems and prov.reasks < REASKS:
        prov.reasks += 1
        last = rounds[-1]
        answer = await ask_model(llm, prompt, reask_messages(messages, answer, last.problems, last.instruction), prov)
        rounds.append(check(answer))
    return rounds
