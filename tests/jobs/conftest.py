"""Job tests run on SQLite and PostgreSQL: ``database_url``, ``engine`` and ``sessions`` of tests/databases.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.jobs.context import JobContext
from service.jobs.queue import DatabaseJobQueue
from service.llm.port import Completion
from service.prompts import Prompt, PromptRegistry
from service.settings import Settings


class NoModel:
    """A model client for jobs that never call the model: any call is a test bug."""

    model = "no-model"
    mode = "json_object"

    async def complete(self, prompt: Prompt, messages: list[dict[str, str]]) -> Completion:
        raise AssertionError("these jobs never call the model")


SettingsFor = Callable[..., Settings]


@pytest.fixture
def settings_for(database_url: str) -> SettingsFor:
    """Settings on the test database: a runtime opened with them lands there too."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url, "llm_base_url": "http://127.0.0.1:9/v1", "llm_model": "no-model",
            "llm_mode": "json_object", "worker_poll_interval_s": 0.05, "job_retry_initial_wait_s": 0,
            "job_retry_max_wait_s": 0, "job_max_attempts": 3,
        }
        return Settings(**{**values, **overrides})

    return build


@pytest.fixture
def context_for(sessions: async_sessionmaker[AsyncSession]) -> Callable[[Settings], JobContext]:
    """A job context on the test database for ``settings``."""

    def build(settings: Settings) -> JobContext:
        registry = PromptRegistry.load(settings.prompts_dir, settings.prompt_versions)
        return JobContext(sessions=sessions, llm=NoModel(), registry=registry, settings=settings)

    return build


@pytest.fixture
def queue(sessions: async_sessionmaker[AsyncSession]) -> DatabaseJobQueue:
    return DatabaseJobQueue(sessions, max_attempts=3)
