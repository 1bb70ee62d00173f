"""The API in process (tests/running_app.py) over SQLite, or SQLite and PostgreSQL (tests/databases.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from functools import partial

import pytest

from service.settings import Settings
from tests.fake_openai import FaultServer
from tests.running_app import Api, app_settings, open_api


@pytest.fixture
def settings_for(fault_server: FaultServer) -> Callable[..., Settings]:
    """``settings_for(database_url, **overrides)``: the harness's settings against this test's fault server."""
    built: Callable[..., Settings] = partial(app_settings, fault_server)
    return built


@pytest.fixture
async def api(sqlite_url: str, settings_for: Callable[..., Settings], fault_server: FaultServer) -> AsyncIterator[Api]:
    """The API on SQLite."""
    async for running in open_api(settings_for(sqlite_url), fault_server):
        yield running


@pytest.fixture
async def any_db_api(database_url: str, settings_for: Callable[..., Settings],
                     fault_server: FaultServer) -> AsyncIterator[Api]:
    """The API on SQLite and on PostgreSQL."""
    async for running in open_api(settings_for(database_url), fault_server):
        yield running


