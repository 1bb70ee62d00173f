"""Job tests run on the store's databases, a SQLite file and this session's PostgreSQL schema.

The fixtures are ``tests/store/conftest.py``'s own, imported rather than written again, so both
folders create, migrate and empty their databases the same way.
"""

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
from service.store import db
from tests.store.conftest import Database, database, engine, postgres, sessions  # noqa: F401 - the fixtures


class NoModel:
    """A model client for jobs that never call the model: any call is a test bug."""

    model = "no-model"
    mode = "json_object"

    async def complete(self, prompt: Prompt, messages: list[dict[str, str]]) -> Completion:
        raise AssertionError("these jobs never call the model")


SettingsFor = Callable[..., Settings]


@pytest.fixture
def settings_for(database: Database, monkeypatch: pytest.MonkeyPatch) -> SettingsFor:  # noqa: F811
    """Settings on the test database; a runtime opened with them lands there too (on PostgreSQL,
    in this session's schema, which its URL alone does not name)."""
    make_engine = db.make_engine

    def on_test_schema(url: Any, **kwargs: Any) -> Any:
        return make_engine(url, **{**database.engine_options, **kwargs})

    monkeypatch.setattr(db, "make_engine", on_test_schema)

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database.url, "llm_base_url": "http://127.0.0.1:9/v1", "llm_model": "no-model",
            "llm_mode": "json_object", "worker_poll_interval_s": 0.05, "job_retry_initial_wait_s": 0,
            "job_retry_max_wait_s": 0, "job_max_attempts": 3,
        }
        return Settings(**{**values, **overrides})

    return build


@pytest.fixture
def context_for(sessions: async_sessionmaker[AsyncSession]) -> Callable[[Settings], JobContext]:  # noqa: F811
    """A job context on the test database for ``settings``."""

    def build(settings: Settings) -> JobContext:
        registry = PromptRegistry.load(settings.prompts_dir, settings.prompt_versions)
        return JobContext(sessions=sessions, llm=NoModel(), registry=registry, settings=settings)

    return build


@pytest.fixture
def queue(sessions: async_sessionmaker[AsyncSession]) -> DatabaseJobQueue:  # noqa: F811
    return DatabaseJobQueue(sessions, max_attempts=3)
