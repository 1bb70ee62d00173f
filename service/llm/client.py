"""The one place that talks to a model: the official openai client, one retry policy.

Everything a stage needs is ``await client.complete(prompt, messages)`` returning a parsed
JSON object and its ``CallUsage``. The SDK's exceptions never leave this module: they are
mapped to ``service.errors`` at one boundary (``_map_openai_errors``). The client's own
retries are off so that the tenacity policy built from settings is the only one.

Timeouts are the one failure not always retried. A server on this machine (the embedded model,
llama.cpp, Ollama) usually has one slot and keeps working on a request whose client gave up, so a
second attempt only queues behind the first and doubles the work. So an attempt that timed out is
retried only while the deadline (``LLM_DEADLINE_S``) still leaves room for one whole new timeout
(``LLM_TIMEOUT_S``). With the defaults for an endpoint on this machine (900 s timeout, 600 s
deadline) a timed-out call is never retried within the call, and the job around it decides; a hosted
endpoint (120 s, 600 s) gets its retries as before. The semaphore defaults to one call in flight for
such an endpoint (``Settings.effective_max_concurrency``).

In the strict modes (``json_schema``, and ``tools`` against OpenAI, whose function is then sent with
``strict: true``; ``LLM_STRICT_TOOLS``) the schema is rewritten into OpenAI's strict subset
(``service.llm.schema``); the limits it moves into descriptions are checked by the stages, which
validate every answer with the prompt's model. Elsewhere the full schema is sent: llama.cpp's server
compiles it, limits included, into a grammar, which the strict rewrite would loosen.
Each call is a tracing span (``service.tracing``) and its ``CallUsage`` carries its cost
(``service.llm.costs``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import openai
import structlog
from openai import AsyncOpenAI
from pydantic import BaseModel
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from schemas import CallUsage
from service import metrics, tracing
from service.errors import LLMError, LLMHTTPError, LLMOutputError, LLMRefusal, LLMTruncated, LLMUnavailable
from service.llm import costs
from service.llm.port import Completion
from service.llm.ratelimit import RateLimiter, request_tokens
from service.llm.schema import drop_added_nulls, strict_schema
from service.prompts import Prompt
from service.settings import Settings

__all__ = ["LLMClient", "display_url", "strict_schema"]

log = structlog.get_logger(__name__)


@dataclass
class _Attempts:
    count: int = 0
    #: An attempt timed out: the endpoint may have billed work nobody received.
    timed_out: bool = False
    #: Seconds inside the HTTP attempts (the model's time: ``CallUsage.latency_ms``) and waiting for a
    #: concurrency slot and the rate window before them (``CallUsage.queue_ms``); backoff sleeps are neither.
    model_s: float = 0.0
    queued_s: float = 0.0


@functools.cache
def _output_schema(output_type: type[BaseModel]) -> dict[str, Any]:
    """A prompt's output schema, built once per type: pydantic builds it afresh on every call (~0.3 ms).
    Shared, so never mutated: the request is serialised, and ``strict_schema`` returns a new dict."""
    return output_type.model_json_schema()


@functools.cache
def _strict_output_schema(output_type: type[BaseModel]) -> dict[str, Any]:
    return strict_schema(_output_schema(output_type))


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


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date); None if absent or nonsense."""
    if headers is None:
        return None
    seconds: float | None = None
    if (ms := headers.get("retry-after-ms")) is not None:
        with suppress(ValueError):
            seconds = float(ms) / 1000
    if seconds is None and (value := headers.get("retry-after")) is not None:
        try:
            seconds = float(value)
        except ValueError:
            with suppress(TypeError, ValueError):
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
    # NaN would make asyncio.sleep never wake, and the deadline would never apply.
    return max(0.0, seconds) if seconds is not None and math.isfinite(seconds) else None


@contextmanager
def _map_openai_errors(url: str, timeout_s: float) -> Iterator[None]:
    try:
        yield
    except openai.APITimeoutError as exc:
        raise LLMUnavailable(f"the model endpoint {url} timed out after {timeout_s:g} s "
                             "(NEWSDIGEST_LLM_TIMEOUT_S)") from exc
    except openai.APIConnectionError as exc:
        raise LLMUnavailable(f"cannot reach the model endpoint {url} ({type(exc.__cause__ or exc).__name__})") from exc
    except openai.APIStatusError as exc:
        code = exc.code if isinstance(getattr(exc, "code", None), str) else None
        # Not chained and no body kept: an endpoint may echo the request's key in its error text,
        # and a traceback of openai's error would print it.
        raise LLMHTTPError(
            f"model endpoint answered {exc.status_code}" + (f" ({code})" if code else ""),
            status_code=exc.status_code,
            retry_after=_retry_after(exc.response.headers),
            code=code,
        ) from None
    except openai.OpenAIError as exc:
        raise LLMError(f"model client error: {type(exc).__name__}") from exc


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, LLMUnavailable):
        return True
    return isinstance(exc, LLMHTTPError) and exc.retryable


def _timed_out(exc: BaseException | None) -> bool:
    return isinstance(exc, LLMUnavailable) and isinstance(exc.__cause__, openai.APITimeoutError)


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
        self._semaphore = asyncio.Semaphore(settings.effective_max_concurrency)
        # Shared requests/tokens per minute across workers (service/ratelimit.py); the caller closes it.
        self._limiter = limiter

    async def close(self) -> None:
        await self._client.close()

    def _request(self, prompt: Prompt, messages: list[dict[str, str]]) -> dict[str, Any]:
        schema = _output_schema(prompt.output_type)
        temperature = self.settings.llm_temperature
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": prompt.meta.max_tokens,
            "temperature": prompt.meta.temperature if temperature is None else temperature,
        }
        if self.mode == "json_schema":
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": prompt.meta.name, "schema": _strict_output_schema(prompt.output_type),
                                "strict": True},
            }
        elif self.mode == "json_object":
            # llama-cpp-python turns this schema into a grammar, so the answer parses by construction;
            # the full schema (lengths and counts included) constrains it there.
            request["response_format"] = {"type": "json_object", "schema": schema}
        else:
            function: dict[str, Any] = {"name": prompt.meta.name, "description": prompt.meta.description}
            if self.strict:
                function.update(parameters=_strict_output_schema(prompt.output_type), strict=True)
            else:
                # llama.cpp and the like compile the full schema, limits included, into a grammar.
                function["parameters"] = schema
            request["tools"] = [{"type": "function", "function": function}]
            request["tool_choice"] = {"type": "function", "function": {"name": prompt.meta.name}}
        return request

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        cap = self.settings.llm_retry_max_wait_s
        if isinstance(exc, LLMHTTPError) and exc.retry_after is not None:
            return min(exc.retry_after, cap)
        backoff = wait_random_exponential(multiplier=self.settings.llm_retry_initial_wait_s, max=cap)
        return float(backoff(state))

    def _should_retry(self, state: RetryCallState) -> bool:
        """Retry 429 (with quota left), 5xx and connection errors; a timeout only while the deadline leaves
        room for one whole new attempt (see the module docstring)."""
        exc = state.outcome.exception() if state.outcome else None
        if exc is None or not _retryable(exc):
            return False
        if _timed_out(exc):
            elapsed = state.seconds_since_start or 0.0
            return elapsed + self.settings.effective_timeout_s <= self.settings.llm_deadline_s
        return True

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
                    tracing.set_attributes(span, _span_usage(exc.usage))
                raise
            tracing.set_attributes(span, _span_usage(completion.usage))
            return completion

    async def _complete(self, prompt: Prompt, messages: list[dict[str, str]]) -> Completion:
        request = self._request(prompt, messages)
        attempts = _Attempts()

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            error_type = type(exc).__name__
            metrics.LLM_RETRIES.labels(prompt=prompt.ref, error_type=error_type).inc()
            log.warning(
                "llm.retry_scheduled",
                prompt=prompt.ref,
                retry_num=state.attempt_number,
                wait_s=round(state.upcoming_sleep, 3),
                error_type=error_type,
                error=str(exc),
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.llm_max_attempts) | stop_after_delay(self.settings.llm_deadline_s),
            wait=self._wait,
            retry=self._should_retry,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            response: Any = await retrying(self._attempt, request, attempts)
        except LLMError as exc:
            if _timed_out(exc) and attempts.count < self.settings.llm_max_attempts:
                log.warning("llm.timeout_not_retried", prompt=prompt.ref, attempts=attempts.count,
                            timeout_s=self.settings.effective_timeout_s, deadline_s=self.settings.llm_deadline_s,
                            reason="the deadline leaves no room for a whole new attempt; the endpoint may still "
                                   "be working on this one")
            exc.usage = self._usage(prompt, attempts, None, outcome="error")
            metrics.LLM_CALLS.labels(prompt=prompt.ref, outcome="error").inc()
            raise
        return self._completion(prompt, response, attempts)

    async def _attempt(self, request: dict[str, Any], attempts: _Attempts) -> Any:
        # The semaphore is held per attempt, so a call sleeping before its retry leaves room for others.
        asked = time.monotonic()
        async with self._semaphore:
            if self._limiter is not None:
                await self._limiter.acquire(tokens=request_tokens(request))
            sent = time.monotonic()
            attempts.queued_s += sent - asked
            attempts.count += 1
            try:
                with _map_openai_errors(self.url, self.settings.effective_timeout_s):
                    return await self._client.chat.completions.create(**request)
            except LLMUnavailable as exc:
                attempts.timed_out = attempts.timed_out or _timed_out(exc)
                raise
            finally:
                attempts.model_s += time.monotonic() - sent

    def _cost(self, response: Any, attempts: _Attempts, input_tokens: int, output_tokens: int,
              cached_tokens: int) -> float | None:
        """The call's dollars: None for the embedded model, a model the price table does not know, or a
        failed call whose attempt timed out (the endpoint may have billed it); 0 for other failed calls."""
        if self.settings.uses_local_llm:
            return None
        if response is None and attempts.timed_out:
            return None
        return costs.call_cost(model=self.model, resolved_model=getattr(response, "model", None),
                               input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=cached_tokens)

    def _usage(self, prompt: Prompt, attempts: _Attempts, response: Any, *, outcome: str) -> CallUsage:
        usage = getattr(response, "usage", None)
        details = getattr(usage, "prompt_tokens_details", None)
        choice = response.choices[0] if response is not None and response.choices else None
        input_tokens = getattr(usage, "prompt_tokens", 0) or 0
        output_tokens = getattr(usage, "completion_tokens", 0) or 0
        cached_tokens = getattr(details, "cached_tokens", 0) or 0
        return CallUsage(
            prompt=prompt.ref,
            prompt_hash=prompt.sha256,
            model=self.model,
            resolved_model=getattr(response, "model", None),
            mode=self.mode,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
            latency_ms=int(attempts.model_s * 1000),
            queue_ms=int(attempts.queued_s * 1000),
            attempts=attempts.count,
            finish_reason=getattr(choice, "finish_reason", None),
            outcome=outcome,
            cost_usd=self._cost(response, attempts, input_tokens, output_tokens, cached_tokens),
        )

    def _completion(self, prompt: Prompt, response: Any, attempts: _Attempts) -> Completion:
        choice = response.choices[0] if response.choices else None
        message = choice.message if choice else None
        content = ""
        if message is not None:
            if self.mode == "tools" and message.tool_calls:
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
                elif self.strict:
                    # The strict schema made optional properties nullable; a null there means "left out".
                    data = drop_added_nulls(data, _output_schema(prompt.output_type))
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


def _span_usage(usage: CallUsage) -> dict[str, Any]:
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
