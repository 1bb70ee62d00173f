"""What one model call took: tokens, time in the model and in the queue, attempts and dollars, as the
``CallUsage`` every result carries and as the attributes of its tracing span."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas import CallUsage
from service.llm import costs
from service.prompts import Prompt


@dataclass
class Attempts:
    count: int = 0
    #: An attempt timed out: the endpoint may have billed work nobody received.
    timed_out: bool = False
    #: Seconds inside the HTTP attempts (the model's time: ``CallUsage.latency_ms``) and waiting for a
    #: concurrency slot and the rate window before them (``CallUsage.queue_ms``); backoff sleeps are neither.
    model_s: float = 0.0
    queued_s: float = 0.0


def _cost(model: str, response: Any, attempts: Attempts, *, priced: bool, input_tokens: int, output_tokens: int,
          cached_tokens: int) -> float | None:
    """The call's dollars: None for the embedded model (not ``priced``), a model the price table does not know,
    or a failed call whose attempt timed out (the endpoint may have billed it); 0 for other failed calls."""
    if not priced:
        return None
    if response is None and attempts.timed_out:
        return None
    return costs.call_cost(model=model, resolved_model=getattr(response, "model", None),
                           input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=cached_tokens)


def call_usage(prompt: Prompt, attempts: Attempts, response: Any, *, model: str, mode: str, priced: bool,
               outcome: str) -> CallUsage:
    """``response`` is None when no attempt got an answer."""
    usage = getattr(response, "usage", None)
    details = getattr(usage, "prompt_tokens_details", None)
    choice = response.choices[0] if response is not None and response.choices else None
    input_tokens = getattr(usage, "prompt_tokens", 0) or 0
    output_tokens = getattr(usage, "completion_tokens", 0) or 0
    cached_tokens = getattr(details, "cached_tokens", 0) or 0
    return CallUsage(
        prompt=prompt.ref,
        prompt_hash=prompt.sha256,
        model=model,
        resolved_model=getattr(response, "model", None),
        mode=mode,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached_tokens,
        latency_ms=int(attempts.model_s * 1000),
        queue_ms=int(attempts.queued_s * 1000),
        attempts=attempts.count,
        finish_reason=getattr(choice, "finish_reason", None),
        outcome=outcome,
        cost_usd=_cost(model, response, attempts, priced=priced, input_tokens=input_tokens,
                       output_tokens=output_tokens, cached_tokens=cached_tokens),
    )


def span_usage(usage: CallUsage) -> dict[str, Any]:
    """A call's usage as span attributes (GenAI semantic conventions where they exist)."""
    attributes: dict[str, Any] = {
        "gen_ai.usage.input_tokens": usage.input_tokens, "gen_ai.usage.output_tokens": usage.output_tokens,
        "newsdigest.cached_tokens": usage.cached_tokens, "newsdigest.attempts": usage.attempts,
        "newsdigest.outcome": usage.outcome,
    }
    if usage.resolved_model:
        attributes["gen_ai.response.model"] = usage.resolved_model
    if usage.finish_reason:
        attributes["gen_ai.response.finish_reasons"] = usage.finish_reason
    if usage.cost_usd is not None:
        attributes["newsdigest.cost_usd"] = usage.cost_usd
    return attributes
