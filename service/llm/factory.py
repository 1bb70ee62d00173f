"""The one way to get a model client from the settings, rate window included.

Every process (the CLI, ``serve`` with its in-process worker, ``newsdigest worker`` on either job
backend, the benchmarks) opens its client here, so ``LLM_REQUESTS_PER_MINUTE`` and
``LLM_TOKENS_PER_MINUTE`` hold wherever a call is made: in a window shared through PostgreSQL when
the database is PostgreSQL and the process shares it, in a process-local window otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.llm import ratelimit
from service.llm.client import LLMClient
from service.settings import Settings


@asynccontextmanager
async def open_llm(settings: Settings, *, shared_window: bool = True) -> AsyncIterator[LLMClient]:
    """The client for ``settings``; ``shared_window=False`` keeps the window in this process (the CLI)."""
    limiter = ratelimit.from_settings(settings, shared=shared_window)
    client = LLMClient(settings, limiter=limiter)
    try:
        yield client
    finally:
        await client.close()
        if limiter is not None:
            await limiter.aclose()
