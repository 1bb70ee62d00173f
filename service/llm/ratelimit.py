"""Requests and tokens per minute for the model endpoint, shared by every worker that shares the database.

Ten workers with ``llm_max_concurrency`` each can start far more calls than the provider's quota
allows; each would get 429s and retry into the same wall. Instead, before each attempt the model
client awaits :meth:`RateLimiter.acquire`, which admits the call only while the rolling window
(the last ``window_s`` seconds) holds fewer than ``llm_requests_per_minute`` calls and fewer than
``llm_tokens_per_minute`` tokens, and otherwise sleeps until enough of the window has aged out.

- :class:`PostgresRateLimiter`: the window is ``coordination.llm_rate_window`` (revision
  ``0002_job_engine``). Check and insert run in one transaction under one advisory lock, with the
  database's clock, so every process sees the same window and the same time.
- :class:`LocalRateLimiter`: the same window in memory, for the embedded single-process setup.

A call's tokens are estimated before it is sent: prompt characters / 4 plus ``max_tokens``,
which is how providers count a request against a tokens-per-minute limit.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.settings import Settings

log = structlog.get_logger(__name__)

_LOCK_KEY = "newsdigest:llm-rate-window"
# A waiter never sleeps less than this: a slot freed a moment ago is worth a fresh look, not a spin.
_MIN_WAIT_S = 0.01


@dataclass(frozen=True)
class Limits:
    """At most ``requests`` calls and ``tokens`` tokens in any ``window_s`` seconds; None is no limit."""

    requests: int | None = None
    tokens: int | None = None
    window_s: float = 60.0

    @property
    def active(self) -> bool:
        return self.requests is not None or self.tokens is not None


class RateLimiter(Protocol):
    async def acquire(self, *, tokens: int = 0) -> float:
        """Wait until a call of ``tokens`` tokens fits the window, record it, return when (epoch seconds)."""
        ...

    async def aclose(self) -> None: ...


def request_tokens(request: dict[str, Any]) -> int:
    """The tokens a chat completion request counts for: its messages' characters / 4, plus ``max_tokens``."""
    chars = sum(len(str(message.get("content") or "")) for message in request.get("messages") or [])
    return math.ceil(chars / 4) + int(request.get("max_tokens") or 0)


def wait_needed(window: Sequence[tuple[float, int]], now: float, tokens: int, limits: Limits) -> float:
    """Seconds until a call of ``tokens`` fits, 0 if it fits now.

    ``window`` holds the (time, tokens) of calls made in the last ``window_s`` seconds, oldest first.
    A call bigger than the whole token budget is let through alone, on an empty window.
    """
    expire: float | None = None  # we must wait until the call made at this time leaves the window
    if limits.requests is not None and len(window) >= limits.requests:
        expire = window[len(window) - limits.requests][0]
    if limits.tokens is not None and window:
        excess = sum(t for _, t in window) + tokens - limits.tokens
        for at, spent in window:
            if excess <= 0:
                break
            expire = at if expire is None else max(expire, at)
            excess -= spent
    if expire is None:
        return 0.0
    return max(expire + limits.window_s - now, _MIN_WAIT_S)


class LocalRateLimiter:
    """The window in this process's memory: right when one process makes all the calls."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._window: deque[tuple[float, int]] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self, *, tokens: int = 0) -> float:
        while True:
            async with self._lock:
                now = time.time()
                while self._window and self._window[0][0] <= now - self.limits.window_s:
                    self._window.popleft()
                wait = wait_needed(self._window, now, tokens, self.limits)
                if wait == 0:
                    self._window.append((now, tokens))
                    return now
            await asyncio.sleep(wait)

    async def aclose(self) -> None:
        return None


class PostgresRateLimiter:
    """The window in ``coordination.llm_rate_window``: one budget for every process on the database."""

    def __init__(self, database_url: str, limits: Limits, *, engine: AsyncEngine | None = None) -> None:
        self.limits = limits
        if engine is None:
            from service.store import db  # not at import: the model client imports this module

            engine = db.make_engine(database_url, pool_size=2, max_overflow=4)
            self._own_engine = True
        else:
            self._own_engine = False
        self._engine = engine
        # The window's table, found on first use (engine_jobs.schema_names). Formatted into the SQL
        # below (S608): a schema name derived from current_schema(), never from a request.
        self._table: str | None = None

    async def _window_table(self, conn: AsyncConnection) -> str:
        if self._table is None:
            from service.store.engine_jobs import schema_names

            app_schema = str(await conn.scalar(text("SELECT current_schema()")))
            self._table = f'"{schema_names(app_schema).coordination}".llm_rate_window'
        return self._table

    async def acquire(self, *, tokens: int = 0) -> float:
        waited = 0.0
        while True:
            async with self._engine.begin() as conn:
                table = await self._window_table(conn)
                await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": _LOCK_KEY})
                now = float(await conn.scalar(text("SELECT extract(epoch FROM clock_timestamp())")) or 0)
                await conn.execute(text(f"DELETE FROM {table} WHERE at <= to_timestamp(:cutoff)"),  # noqa: S608
                                   {"cutoff": now - self.limits.window_s})
                rows = await conn.execute(text(
                    f"SELECT extract(epoch FROM at), tokens FROM {table} ORDER BY at"))  # noqa: S608
                window = [(float(at), int(spent)) for at, spent in rows]
                wait = wait_needed(window, now, tokens, self.limits)
                if wait == 0:
                    await conn.execute(text(
                        f"INSERT INTO {table} (at, tokens) VALUES (to_timestamp(:at), :tokens)"),  # noqa: S608
                        {"at": now, "tokens": tokens})
                    if waited:
                        log.info("llm.rate_limited", waited_s=round(waited, 3), tokens=tokens)
                    return now
            # A little jitter so the waiters of one freed slot do not all knock at once.
            pause = wait + random.uniform(0, _MIN_WAIT_S * 5)  # noqa: S311 - jitter, not secrets
            waited += pause
            await asyncio.sleep(pause)

    async def aclose(self) -> None:
        if self._own_engine:
            await self._engine.dispose()


def from_settings(settings: Settings, *, shared: bool = True) -> RateLimiter | None:
    """The limiter the settings ask for: shared through PostgreSQL, in memory on SQLite (or when
    ``shared`` is off), or none."""
    limits = Limits(requests=settings.llm_requests_per_minute, tokens=settings.llm_tokens_per_minute)
    if not limits.active:
        return None
    if shared and settings.database_url.startswith("postgresql"):
        return PostgresRateLimiter(settings.database_url, limits)
    return LocalRateLimiter(limits)
