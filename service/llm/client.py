"""The one place that talks to a model: the official openai client behind a semaphore and one retry policy.

Everything a stage needs is ``await client.complete(prompt, messages)`` returning a parsed
JSON object and its ``CallUsage``. The SDK's exceptions never leave ``service.llm``: they are
mapped to ``service.errors`` at one boundary (``openai_errors``); the retry policy is ``retry``,
the request ``request``, the reading of the answer ``answer``, and what a call took ``usage``.
The semaphore defaults to one call in flight for an endpoint on this machine
(``Settings.effective_max_concurrency``). Each call is a tracing span (``service.tracing``) and
its ``CallUsage`` carries its cost (``service.llm.costs``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import structlog
from openai import AsyncOpenAI

from schemas import CallUsage
from service import metrics, tracing
from service.errors import LLMError, LLMUnavailable
from service.llm.answer import read_answer
from service.llm.openai_errors import map_openai_errors, timed_out
from service.llm.port import Completion
from service.llm.ratelimit import RateLimiter, request_tokens
from service.llm.request import chat_request
from service.llm.retry import RetryPolicy
from service.llm.schema import strict_schema
from service.llm.usage import Attempts, call_usage, span_usage
from service.prompts import Prompt
from service.settings import Settings

__all__ = ["LLMClient", "display_url", "strict_schema"]

log = structlog.get_logger(__name__)


def display_url(url: str) -> str:
    """``url`` fit for a message or a log: scheme, host, port and path, never credentials or a query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    return f"{parts.scheme}://{host}{port}{parts.path}".rstrip("/")


class LLMClient:
    """AsyncOpenAI behind a semaphore and a bounded, jittered retry policy."""

    def __init__(self, settings: Settings, *, http_client: Any = None, limiter: RateLimiter | None = None) -> None:
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "not-needed"
        self.settings = settings
        self.model = settings.effective_model
        self.mode = settings.effective_mode
        self.url = display_url(settings.effective_base_url)
        #: The schema goes rewritten into OpenAI's strict subset: json_schema mode, and tools where strict.
        self.strict = self.mode == "json_schema" or (self.mode == "tools" and settings.effective_strict_tools)
        self._client = AsyncOpenAI(
            base_url=settings.effective_base_url,
            api_key=key,
            max_retries=0,
            timeout=settings.effective_timeout_s,
            http_client=http_client,
        )
        self._retry = RetryPolicy(settings)
        self._semaphore = asyncio.Semaphore(settings.effective_max_concurrency)
        # Shared requests/tokens per minute across workers (service/ratelimit.py); the caller closes it.
        self._limiter = limiter

    async def close(self) -> None:
        await self._client.close()

    async def complete(self, prompt: Prompt, messages: list[dict[str, str]]) -> Completion:
        """One model call (with retries). Raises LLMError subclasses; usage rides on the error."""
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": self.model,
                      "server.address": urlsplit(self.settings.effective_base_url).hostname or "",
                      "newsdigest.prompt": prompt.ref, "newsdigest.mode": self.mode}
        with tracing.span(f"chat {self.model}", kind="client", attributes=attributes) as span:
            try:
                completion = await self._complete(prompt, messages)
            except LLMError as exc:
                if exc.usage is not None:
                    tracing.set_attributes(span, span_usage(exc.usage))
                raise
            tracing.set_attributes(span, span_usage(completion.usage))
            return completion

    async def _complete(self, prompt: Prompt, messages: list[dict[str, str]]) -> Completion:
        request = chat_request(prompt, messages, model=self.model, mode=self.mode, strict=self.strict,
                               temperature=self.settings.llm_temperature)
        attempts = Attempts()
        try:
            response: Any = await self._retry.retrying(prompt.ref)(self._attempt, request, attempts)
        except LLMError as exc:
            if timed_out(exc) and attempts.count < self.settings.llm_max_attempts:
                log.warning("llm.timeout_not_retried", prompt=prompt.ref, attempts=attempts.count,
                            timeout_s=self.settings.effective_timeout_s, deadline_s=self.settings.llm_deadline_s,
                            reason="the deadline leaves no room for a whole new attempt; the endpoint may still "
                                   "be working on this one")
            exc.usage = self._usage(prompt, attempts, None, outcome="error")
            metrics.LLM_CALLS.labels(prompt=prompt.ref, outcome="error").inc()
            raise
        return self._completion(prompt, response, attempts)

    async def _attempt(self, request: dict[str, Any], attempts: Attempts) -> Any:
        # The semaphore is held per attempt, so a call sleeping before its retry leaves room for others.
        asked = time.monotonic()
        async with self._semaphore:
            if self._limiter is not None:
                await self._limiter.acquire(tokens=request_tokens(request))
            sent = time.monotonic()
            attempts.queued_s += sent - asked
            attempts.count += 1
            try:
                with map_openai_errors(self.url, self.settings.effective_timeout_s):
                    return await self._client.chat.completions.create(**request)
            except LLMUnavailable as exc:
                attempts.timed_out = attempts.timed_out or timed_out(exc)
                raise
            finally:
                attempts.model_s += time.monotonic() - sent

    def _usage(self, prompt: Prompt, attempts: Attempts, response: Any, *, outcome: str) -> CallUsage:
        return call_usage(prompt, attempts, response, model=self.model, mode=self.mode,
                          priced=not self.settings.uses_local_llm, outcome=outcome)

    def _completion(self, prompt: Prompt, response: Any, attempts: Attempts) -> Completion:
        answer = read_answer(prompt, response, tools=self.mode == "tools", strict=self.strict)
        outcome, error, content, data = answer.outcome, answer.error, answer.content, answer.data
        usage = self._usage(prompt, attempts, response, outcome=outcome)
        metrics.LLM_CALLS.labels(prompt=prompt.ref, outcome=outcome).inc()
        metrics.LLM_TOKENS.labels(prompt=prompt.ref, direction="input").inc(usage.input_tokens)
        metrics.LLM_TOKENS.labels(prompt=prompt.ref, direction="output").inc(usage.output_tokens)
        metrics.LLM_LATENCY.labels(prompt=prompt.ref).observe(attempts.model_s)
        metrics.LLM_QUEUE.labels(prompt=prompt.ref).observe(attempts.queued_s)
        if usage.cost_usd:
            metrics.LLM_COST.labels(prompt=prompt.ref, model=self.model).inc(usage.cost_usd)
        log.info(
            "llm.call",
            prompt=prompt.ref,
            outcome=outcome,
            attempts=attempts.count,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            latency_ms=usage.latency_ms,
            queue_ms=usage.queue_ms,
            cost_usd=usage.cost_usd,
        )
        if error is not None:
            error.usage = usage
            error.content = content
            raise error
        return Completion(data=data, content=content, usage=usage)

