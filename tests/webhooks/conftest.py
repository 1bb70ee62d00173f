"""CMS webhooks in process (tests/running_app.py), signed by tests/signing.py, over SQLite or both databases.

The model is the fault server (answers from ``tests.factories``); the worker polls fast and retries at
once. Tests take ``sqlite_url`` or ``database_url`` (tests/databases.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from service.settings import Settings
from tests.fake_openai import FaultServer
from tests.running_app import Hooks, app_settings, open_hooks
from tests.signing import SECRET


@pytest.fixture
def hook_settings(fault_server: FaultServer) -> Callable[..., Settings]:
    def build(database_url: str, **overrides: Any) -> Settings:
        return app_settings(fault_server, database_url, **{
            "webhook_secret": SECRET, "story_refresh_delay_s": 0.3, "story_refresh_busy_retry_s": 0.2, **overrides})

    return build


@pytest.fixture
async def idle_hooks(sqlite_url: str, hook_settings: Callable[..., Settings],
                     fault_server: FaultServer) -> AsyncIterator[Hooks]:
    """No worker: jobs stay queued, so a test sees exactly what the route wrote (and no model call)."""
    async for running in open_hooks(hook_settings(sqlite_url, run_worker=False), fault_server):
        yield running


@pytest.fixture
async def any_db_idle_hooks(database_url: str, hook_settings: Callable[..., Settings],
                            fault_server: FaultServer) -> AsyncIterator[Hooks]:
    async for running in open_hooks(hook_settings(database_url, run_worker=False), fault_server):
        yield running
