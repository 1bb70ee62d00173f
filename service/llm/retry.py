"""The one retry policy of model calls: 429 (with quota left), 5xx and connection errors, with jittered
exponential backoff or the endpoint's ``Retry-After`` (both capped), within ``LLM_MAX_ATTEMPTS`` and
``LLM_DEADLINE_S``. The openai client's own retries are off so that this is the only policy.

Timeouts are the one failure not always retried. A server on this machine (the embedded model,
llama.cpp, Ollama) usually has one slot and keeps working on a request whose client gave up, so a
second attempt only queues behind the first and doubles the work. So an attempt that timed out is
retried only while the deadline (``LLM_DEADLINE_S``) still leaves room for one whole new timeout
(``LLM_TIMEOUT_S``). With the defaults for an endpoint on this machine (900 s timeout, 600 s
deadline) a timed-out call is never retried within the call, and the job around it decides; a hosted
endpoint (120 s, 600 s) gets its retries as before.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from service import metrics
from service.errors import LLMHTTPError, LLMUnavailable
from service.llm.openai_errors import timed_out
from service.settings import Settings

log = structlog.get_logger(__name__)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, LLMUnavailable):
        return True
    return isinstance(exc, LLMHTTPError) and exc.retryable


class RetryPolicy:
    """Built once per client from its settings; ``retrying`` makes the loop of one call."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

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
        if timed_out(exc):
            elapsed = state.seconds_since_start or 0.0
            return elapsed + self.settings.effective_timeout_s <= self.settings.llm_deadline_s
        return True

    def retrying(self, prompt_ref: str) -> AsyncRetrying:
        """The retry loop of one call of ``prompt_ref``; each retry is counted and logged before its wait."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.settings.llm_max_attempts) | stop_after_delay(self.settings.llm_deadline_s),
            wait=self._wait,
            retry=self._should_retry,
            before_sleep=_announce(prompt_ref),
            reraise=True,
        )


def _announce(prompt_ref: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        error_type = type(exc).__name__
        metrics.LLM_RETRIES.labels(prompt=prompt_ref, error_type=error_type).inc()
        log.warning(
            "llm.retry_scheduled",
            prompt=prompt_ref,
            retry_num=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 3),
            error_type=error_type,
            error=str(exc),
        )

    return before_sleep
