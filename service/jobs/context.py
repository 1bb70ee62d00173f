"""What every job function gets besides its payload: the same handful of objects on any engine.

The in-process worker builds one at start-up; a distributed engine's worker process (issue 7)
builds its own from ``Settings`` and hands it to the very same functions in ``tasks``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.llm.port import Completer
from service.prompts import PromptRegistry
from service.settings import Settings

Payload = dict[str, Any]
#: A job's outcome: the ids it produced, shown as ``result`` by ``GET /v1/jobs/{id}``.
Result = dict[str, Any]


@dataclass(frozen=True)
class JobContext:
    sessions: async_sessionmaker[AsyncSession]
    llm: Completer
    registry: PromptRegistry
    settings: Settings


Task = Callable[[JobContext, Payload], Awaitable[Result]]
