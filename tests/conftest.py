"""Shared test setup: cassettes that fail loudly, no secrets, no outside network.

Two plugins serve every folder: tests/databases.py (``database_url``, ``sqlite_url``, ``engine``,
``sessions``: SQLite and PostgreSQL) and tests/fake_openai.py (the ``fault_server`` fixture).
``make_llm`` builds model clients on the fault server.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
import structlog

from service.llm.client import LLMClient
from service.prompts import Prompt, PromptRegistry
from service.quality import cassettes as json_body_serializer
from service.settings import LOCAL_LLM_PORT, Settings

if TYPE_CHECKING:  # imported by pytest as a plugin below, so that its asserts are rewritten
    from tests.fake_openai import FaultServer

# One database fixture set (SQLite and PostgreSQL) and one fake OpenAI server, for every folder.
pytest_plugins = ["tests.databases", "tests.fake_openai"]

ROOT = Path(__file__).resolve().parent.parent
#: Recording reads the real key from here; replay never needs one.
RECORDING_KEY = os.environ.get("PYTEST_LLM_API_KEY", "test-key")
#: Where cassettes were recorded from, unless the recorder points elsewhere.
RECORDING_BASE_URL = os.environ.get("PYTEST_LLM_BASE_URL", f"http://127.0.0.1:{LOCAL_LLM_PORT}/v1")
SECRET_HEADERS = [
    "authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "set-cookie",
    "openai-organization",
    "openai-project",
]


@pytest.fixture(autouse=True, scope="session")
def uncached_loggers() -> Iterator[None]:
    """The CLI's configure_logging caches loggers on first use, and structlog's capture_logs cannot see a
    cached logger: once a CLI test ran, every later test that reads log events would read none."""
    configure = structlog.configure

    def without_cache(**kwargs: Any) -> None:
        configure(**{**kwargs, "cache_logger_on_first_use": False})

    with mock.patch.object(structlog, "configure", without_cache):
        yield


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's endpoint, keys or proxies."""
    for name in list(os.environ):
        if name.startswith(("NEWSDIGEST_", "OPENAI_", "OTEL_")) or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name, raising=False)
    # Nor a .env file in the working directory (Settings reads one): only what a test sets counts.
    monkeypatch.setitem(Settings.model_config, "env_file", None)


@pytest.fixture(scope="session")
def vcr_config() -> dict[str, Any]:
    return {
        "filter_headers": SECRET_HEADERS,
        "match_on": ["method", "path", "body"],
        # The in-process API (base_url http://test) must never be recorded or replayed.
        "ignore_hosts": ["test"],
        "decode_compressed_response": True,
    }


@pytest.fixture
def vcr_cassette_dir(request: pytest.FixtureRequest) -> str:
    return str(ROOT / "cassettes" / request.module.__name__.rsplit(".", 1)[-1])


@pytest.hookimpl(optionalhook=True)
def pytest_recording_configure(config: pytest.Config, vcr: Any) -> None:
    vcr.register_serializer("yaml", json_body_serializer)


@pytest.fixture(autouse=True)
def _fail_unplayed_cassettes(request: pytest.FixtureRequest) -> Iterator[None]:
    """A recorded interaction the test no longer makes means the cassette is stale."""
    if request.node.get_closest_marker("vcr") is None:
        yield
        return
    cassette = request.getfixturevalue("vcr")
    yield
    if cassette is not None and request.config.getoption("--record-mode") == "none" and not cassette.all_played:
        unplayed = len(cassette.data) - cassette.play_count
        pytest.fail(f"{unplayed} recorded interaction(s) in {cassette._path} were not used: re-record (make record)")


@pytest.fixture
def recorded_settings(tmp_path: Path) -> Settings:
    """Settings of the embedded default, pointed at the endpoint the cassettes came from."""
    return Settings(
        llm_base_url=RECORDING_BASE_URL,
        llm_api_key=RECORDING_KEY,
        llm_mode="json_object",
        llm_model="qwen2.5-coder-1.5b-instruct-q4",
        llm_max_concurrency=1,
        llm_timeout_s=600,
        llm_retry_initial_wait_s=0,
        llm_retry_max_wait_s=0,
        # The embedded model's context, so long articles are read in the sections it was recorded with.
        llm_context_tokens=8192,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/nd.db",
    )


@pytest.fixture(scope="session")
def registry() -> PromptRegistry:
    return PromptRegistry.load(ROOT / "prompts")


@pytest.fixture
def prompts(registry: PromptRegistry) -> dict[str, Prompt]:
    """The current version of every prompt, by name."""
    return registry.resolve()


MakeLLM = Callable[..., LLMClient]


@pytest.fixture
def llm_settings() -> dict[str, Any]:
    """Settings ``make_llm`` gives every client it builds; a module overrides this fixture to change them."""
    return {}


@pytest.fixture
async def make_llm(fault_server: FaultServer, llm_settings: dict[str, Any]) -> AsyncIterator[MakeLLM]:
    """Build LLMClients on the fault server (or ``base_url``): three attempts with no wait between them,
    0.5 s to answer, JSON mode. All are closed after the test."""
    clients: list[LLMClient] = []

    def make(base_url: str | None = None, **overrides: Any) -> LLMClient:
        url = base_url or fault_server.base_url
        values: dict[str, Any] = {
            "llm_base_url": url, "llm_api_key": "test-key", "llm_mode": "json_object", "llm_max_attempts": 3,
            "llm_retry_initial_wait_s": 0, "llm_retry_max_wait_s": 0, "llm_timeout_s": 0.5,
        }
        settings = Settings(**{**values, **llm_settings, **overrides})
        assert settings.effective_base_url == url  # never the embedded model's port by accident
        clients.append(LLMClient(settings))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()
