"""Settings: prefixes, OpenAI fallbacks, the hosted path, endpoint defaults, the data directory, .env files,
one-line errors, and refusals in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import PROJECT_ROOT, Settings, default_model_dir, is_loopback_url, settings_error


@pytest.fixture(autouse=True)
def _no_dotenv_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs where no .env lies, unless it writes one: the developer's own .env must not count."""
    monkeypatch.chdir(tmp_path)


def test_embedded_default_without_an_endpoint() -> None:
    settings = Settings()
    assert settings.uses_local_llm
    assert settings.effective_mode == "json_object"
    assert settings.effective_base_url == "http://127.0.0.1:8765/v1"
    assert settings.effective_model == "qwen2.5-coder-1.5b-instruct-q4"
    assert settings.data_dir == PROJECT_ROOT / "data"
    assert settings.database_url == f"sqlite+aiosqlite:///{PROJECT_ROOT / 'data' / 'newsdigest.db'}"


def test_openai_variables_are_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.example.test/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fallback")
    settings = Settings()
    assert settings.effective_base_url == "https://api.example.test/v1"
    assert settings.effective_mode == "json_schema"
    assert settings.llm_api_key is not None and settings.llm_api_key.get_secret_value() == "sk-fallback"
    monkeypatch.setenv("NEWSDIGEST_LLM_API_KEY", "sk-own")
    assert Settings().llm_api_key.get_secret_value() == "sk-own"  # type: ignore[union-attr]
    assert "sk-own" not in repr(Settings())


# --- the hosted path in one step ------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["OPENAI_API_KEY", "NEWSDIGEST_LLM_API_KEY"])
def test_a_key_without_a_base_url_means_openai(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, "sk-test")
    settings = Settings()
    assert not settings.uses_local_llm
    assert settings.effective_base_url == "https://api.openai.com/v1"
    assert settings.effective_mode == "json_schema"
    assert settings.effective_model == "gpt-4o-mini"
    assert settings.effective_timeout_s == 120.0
    assert settings.effective_max_concurrency == 4
    assert not settings.runs_sequentially


def test_dotenv_in_the_working_directory_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(Settings.model_config, "env_file", ".env")  # as shipped, whatever the suite's conftest does
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv\nNEWSDIGEST_LLM_MODEL=gpt-4.1-mini\n"
                                   "SOMETHING_ELSE=ignored\n")
    settings = Settings()
    assert settings.llm_api_key is not None and settings.llm_api_key.get_secret_value() == "sk-from-dotenv"
    assert settings.effective_base_url == "https://api.openai.com/v1"
    assert settings.effective_model == "gpt-4.1-mini"
    monkeypatch.setenv("NEWSDIGEST_LLM_MODEL", "gpt-4o")  # the environment wins over the file
    assert Settings().effective_model == "gpt-4o"


# --- an own OpenAI-compatible server ----------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:11434/v1", "http://localhost:8080/v1", "http://[::1]:8000/v1",
                                 "http://127.0.0.2:9/v1"])
def test_a_loopback_endpoint_gets_one_slot_and_the_long_timeout(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSDIGEST_LLM_BASE_URL", url)
    settings = Settings()
    assert is_loopback_url(url)
    assert not settings.uses_local_llm
    assert settings.llm_is_loopback
    assert settings.effective_max_concurrency == 1
    assert settings.effective_timeout_s == 900.0
    assert settings.runs_sequentially


@pytest.mark.parametrize("url", ["https://api.openai.com/v1", "https://my-vllm.internal:8000/v1",
                                 "http://10.0.0.5:11434/v1", "http://localhost.example.com/v1"])
def test_a_remote_endpoint_gets_four_slots_and_the_short_timeout(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSDIGEST_LLM_BASE_URL", url)
    settings = Settings()
    assert not settings.llm_is_loopback
    assert (settings.effective_max_concurrency, settings.effective_timeout_s) == (4, 120.0)
    assert not settings.runs_sequentially


def test_explicit_concurrency_and_timeout_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSDIGEST_LLM_BASE_URL", "http://127.0.0.1:11434/v1")
    monkeypatch.setenv("NEWSDIGEST_LLM_MAX_CONCURRENCY", "3")
    monkeypatch.setenv("NEWSDIGEST_LLM_TIMEOUT_S", "60")
    settings = Settings()
    assert (settings.effective_max_concurrency, settings.effective_timeout_s) == (3, 60.0)
    assert not settings.runs_sequentially
    monkeypatch.setenv("NEWSDIGEST_LLM_BASE_URL", "https://api.openai.com/v1")
    monkeypatch.setenv("NEWSDIGEST_LLM_MAX_CONCURRENCY", "1")
    assert Settings().runs_sequentially


# --- one data directory, one model directory per user ------------------------------------------------


def test_data_dir_moves_the_database_and_the_pid_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSDIGEST_DATA_DIR", "state")  # relative: from the working directory, made absolute
    settings = Settings()
    assert settings.data_dir == tmp_path.resolve() / "state"
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'state' / 'newsdigest.db'}"
    assert settings.local_llm_dir == tmp_path.resolve() / "state" / "local-llm"
    assert settings.effective_model_dir == default_model_dir()  # the model is shared, not per checkout
    monkeypatch.setenv("NEWSDIGEST_DATABASE_URL", "postgresql://u@127.0.0.1/db")
    assert Settings().database_url == "postgresql+asyncpg://u@127.0.0.1/db"


def test_model_dir_defaults_to_the_users_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert Settings().effective_model_dir == tmp_path.resolve() / "cache" / "newsdigest" / "models"
    monkeypatch.setenv("NEWSDIGEST_MODEL_DIR", str(tmp_path / "models"))
    assert Settings().effective_model_dir == tmp_path.resolve() / "models"


def test_a_local_llm_dir_set_alone_keeps_the_model_with_it(tmp_path: Path) -> None:
    settings = Settings(local_llm_dir=tmp_path / "llm")
    assert settings.effective_model_dir == tmp_path.resolve() / "llm"


# --- errors name the variable, on one line -----------------------------------------------------------


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("NEWSDIGEST_PROMPT_VERSIONS", "key_facts", "NEWSDIGEST_PROMPT_VERSIONS: expected name@version pairs"),
    ("NEWSDIGEST_PROMPT_VERSIONS", "key_facts@two", "got 'key_facts@two'"),
    ("NEWSDIGEST_LLM_MAX_CONCURRENCY", "many", "NEWSDIGEST_LLM_MAX_CONCURRENCY: Input should be a valid integer"),
    ("NEWSDIGEST_LLM_MAX_CONCURRENCY", "0", "NEWSDIGEST_LLM_MAX_CONCURRENCY: Input should be greater than or equal"),
    ("OPENAI_BASE_URL", "api.openai.com/v1", "OPENAI_BASE_URL: must be an http:// or https:// URL"),
    ("NEWSDIGEST_LLM_MODE", "grammar", "NEWSDIGEST_LLM_MODE: Input should be 'json_schema', 'json_object' or 'tools'"),
    ("NEWSDIGEST_CALLBACK_RETRY_SCHEDULE_S", "5,-1", "NEWSDIGEST_CALLBACK_RETRY_SCHEDULE_S: waits must be 0 or more"),
    ("NEWSDIGEST_CALLBACK_URL", "https://cms.example/hooks",
     "NEWSDIGEST_CALLBACK_URL needs NEWSDIGEST_CALLBACK_SECRET"),
])
def test_bad_settings_make_one_line_naming_the_variable(
    variable: str, value: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError) as caught:
        Settings()
    line = settings_error(caught.value)
    assert expected in line
    assert "\n" not in line
    assert "not enough values to unpack" not in line
    assert "default factory" not in line


def test_a_secret_value_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSDIGEST_WEBHOOK_SECRET", "whsec_!!!not-base64-SECRETVALUE")
    with pytest.raises(ValueError) as caught:
        Settings()
    line = settings_error(caught.value)
    assert line.startswith("NEWSDIGEST_WEBHOOK_SECRET: must be a Standard Webhooks secret")
    assert "SECRETVALUE" not in line


def test_lists_and_pins_from_plain_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSDIGEST_API_KEYS", "k1, k2")
    monkeypatch.setenv("NEWSDIGEST_PROMPT_VERSIONS", "key_facts@1,sentiment@2")
    monkeypatch.setenv("NEWSDIGEST_DATABASE_URL", "postgresql://u@127.0.0.1/db")
    monkeypatch.setenv("NEWSDIGEST_CALLBACK_RETRY_SCHEDULE_S", "1, 60,3600")
    settings = Settings()
    assert [k.get_secret_value() for k in settings.api_keys] == ["k1", "k2"]
    assert settings.prompt_versions == {"key_facts": 1, "sentiment": 2}
    assert settings.database_url == "postgresql+asyncpg://u@127.0.0.1/db"
    assert settings.callback_retry_schedule_s == [1.0, 60.0, 3600.0]


def test_operations_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.worker_metrics_port == 9464
    assert not settings.otel_enabled
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert Settings().otel_endpoint == "http://127.0.0.1:4318" and Settings().otel_enabled
    monkeypatch.setenv("NEWSDIGEST_OTEL_ENDPOINT", "http://collector:4318")
    assert Settings().otel_endpoint == "http://collector:4318"


def test_production_refuses_to_run_without_api_keys() -> None:
    with pytest.raises(ValidationError, match="NEWSDIGEST_API_KEYS"):
        Settings(environment="production")
