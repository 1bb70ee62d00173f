"""Settings: prefixes, OpenAI fallbacks, drivers, and refusals in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_embedded_default_without_an_endpoint() -> None:
    settings = Settings()
    assert settings.uses_local_llm
    assert settings.effective_mode == "json_object"
    assert settings.effective_base_url == "http://127.0.0.1:8765/v1"
    assert settings.database_url == "sqlite+aiosqlite:///./data/newsdigest.db"


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


def test_lists_and_pins_from_plain_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSDIGEST_API_KEYS", "k1, k2")
    monkeypatch.setenv("NEWSDIGEST_PROMPT_VERSIONS", "key_facts@1,sentiment@2")
    monkeypatch.setenv("NEWSDIGEST_DATABASE_URL", "postgresql://u@127.0.0.1/db")
    settings = Settings()
    assert [k.get_secret_value() for k in settings.api_keys] == ["k1", "k2"]
    assert settings.prompt_versions == {"key_facts": 1, "sentiment": 2}
    assert settings.database_url == "postgresql+asyncpg://u@127.0.0.1/db"


def test_production_refuses_to_run_without_api_keys() -> None:
    with pytest.raises(ValidationError, match="NEWSDIGEST_API_KEYS"):
        Settings(environment="production")
