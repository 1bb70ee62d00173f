"""Settings from the environment (prefix ``NEWSDIGEST_``); never built at import time."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LLMMode = Literal["json_schema", "json_object", "tools"]
JobBackend = Literal["inprocess", "procrastinate"]

#: Where the embedded local model server listens when no endpoint is configured.
LOCAL_LLM_HOST = "127.0.0.1"
LOCAL_LLM_PORT = 8765


#: Tokens a prompt needs besides the article: the answer (max_tokens) and the system and task text.
_ANSWER_AND_INSTRUCTIONS = 1_700


class Settings(BaseSettings):
    """Everything an operator can set. ``Settings()`` reads the environment."""

    # validate_by_name: Settings(llm_api_key=...) works in code even though the env names are aliases.
    model_config = SettingsConfigDict(env_prefix="NEWSDIGEST_", extra="ignore", validate_by_name=True)

    environment: Literal["development", "production"] = "development"

    # AliasChoices skips the prefix, so both spellings are written out.
    llm_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("NEWSDIGEST_LLM_BASE_URL", "OPENAI_BASE_URL")
    )
    llm_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("NEWSDIGEST_LLM_API_KEY", "OPENAI_API_KEY")
    )
    llm_model: str | None = None
    llm_mode: LLMMode | None = None
    # Unset: 120 s for a hosted endpoint, 900 s for the embedded model, whose single slot finishes an
    # abandoned request before the next, so a short timeout only piles retries onto it.
    llm_timeout_s: float | None = None
    llm_max_concurrency: int = Field(default=4, ge=1)
    llm_max_attempts: int = Field(default=4, ge=1)
    llm_deadline_s: float = 600.0
    llm_retry_max_wait_s: float = 30.0
    llm_retry_initial_wait_s: float = 0.5
    llm_temperature: float | None = None
    # The model's context in tokens; an article longer than it holds is read in sections. Unset: the
    # embedded model's own context, and none for a hosted endpoint (128k-token models read any article whole).
    llm_context_tokens: int | None = Field(default=None, ge=2048)

    local_llm_dir: Path = Path("data/local-llm")
    local_llm_port: int = LOCAL_LLM_PORT
    local_llm_ctx: int = 8192

    database_url: str = "sqlite+aiosqlite:///./data/newsdigest.db"
    # NoDecode: plain comma-separated values are accepted, not only JSON.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    webhook_secret: SecretStr | None = None
    callback_url: str | None = None
    callback_secret: SecretStr | None = None
    prompt_versions: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    prompts_dir: Path = Path(__file__).resolve().parent.parent / "prompts"

    max_article_chars: int = Field(default=60_000, ge=100)
    max_request_bytes: int = Field(default=1_000_000, ge=1_000)
    digest_language: str = "en"

    # The HTTP service and its jobs (service/api, service/jobs).
    migrate_on_start: bool = Field(default=False, description="Run Alembic to head at start-up instead of refusing.")
    run_worker: bool = Field(default=True, description="Run the job worker inside the API process.")
    worker_concurrency: int = Field(default=1, ge=1, description="Jobs one worker process runs at once.")
    worker_poll_interval_s: float = Field(default=1.0, gt=0)
    # A running job whose lock is older than this belonged to a dead worker; live ones heartbeat.
    job_lock_timeout_s: float = Field(default=120.0, gt=0)
    job_max_attempts: int = Field(default=3, ge=1)
    job_retry_initial_wait_s: float = Field(default=5.0, ge=0)
    job_retry_max_wait_s: float = Field(default=600.0, ge=0)
    worker_shutdown_grace_s: float = Field(default=10.0, ge=0)
    readiness_timeout_s: float = Field(default=3.0, gt=0)

    # CMS webhooks and living story digests (service/webhooks.py, service/callbacks.py, story_jobs).
    webhook_retention_days: float = Field(
        default=7, gt=0, description="Keep webhook ids this long to spot redeliveries (senders retry for days)."
    )
    story_refresh_delay_s: float = Field(
        default=2.0, ge=0, description="Debounce: a story's refresh waits this long so a burst of events makes one."
    )
    story_refresh_busy_retry_s: float = Field(
        default=5.0, gt=0, description="When a refresh of the same story is running, try again after this long."
    )
    callback_timeout_s: float = Field(default=10.0, gt=0)
    callback_max_attempts: int = Field(default=8, ge=1, description="Delivery attempts of one digest.updated event.")

    # Beyond one machine (service/jobs/engine.py, service/ratelimit.py).
    job_backend: JobBackend = Field(
        default="inprocess",
        description="inprocess: the database worker (any database); procrastinate: the engine, on PostgreSQL.",
    )
    job_queues: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Engine worker only: the job kinds it takes (empty: all of them)."
    )
    llm_requests_per_minute: int | None = Field(
        default=None, ge=1, description="Model calls started per rolling minute, across all workers on the database."
    )
    llm_tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Tokens per rolling minute (prompt estimate + max_tokens), across every worker."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("database_url", mode="before")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        """Give plain database URLs the async driver the store needs."""
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if isinstance(value, str) and value.startswith(plain):
                return driver + value[len(plain) :]
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("job_queues", mode="before")
    @classmethod
    def _split_queues(cls, value: object) -> object:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [q.strip() for q in value.split(",") if q.strip()]
        return value

    @field_validator("prompt_versions", mode="before")
    @classmethod
    def _parse_versions(cls, value: object) -> object:
        """Accept ``key_facts@2,sentiment@1`` as well as JSON."""
        if isinstance(value, str) and not value.lstrip().startswith("{"):
            pairs = (item.strip().split("@", 1) for item in value.split(",") if item.strip())
            return {name: int(version) for name, version in pairs}
        return value

    @field_validator("webhook_secret", "callback_secret")
    @classmethod
    def _standard_webhooks_secret(cls, value: SecretStr | None) -> SecretStr | None:
        """Refuse at start-up a secret the signing library would choke on at the first event."""
        if value is not None:
            raw = value.get_secret_value().removeprefix("whsec_").rstrip("=")
            try:
                decoded = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
            except ValueError:
                decoded = b""
            if not decoded:
                raise ValueError("must be a Standard Webhooks secret: whsec_ followed by base64")
        return value

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _callbacks_are_signed(self) -> Settings:
        # An unsigned callback would teach the CMS to accept anyone's digest.updated events.
        if self.callback_url and self.callback_secret is None:
            raise ValueError("NEWSDIGEST_CALLBACK_URL needs NEWSDIGEST_CALLBACK_SECRET (whsec_...)")
        return self

    @model_validator(mode="after")
    def _engine_needs_postgres(self) -> Settings:
        # The engine keeps its queue in PostgreSQL, next to the jobs it runs (service/jobs/engine.py).
        if self.job_backend == "procrastinate" and not self.database_url.startswith("postgresql"):
            raise ValueError("NEWSDIGEST_JOB_BACKEND=procrastinate needs a PostgreSQL NEWSDIGEST_DATABASE_URL")
        return self

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> Settings:
        if self.environment == "production" and (
            not self.api_keys or any(not k.get_secret_value() for k in self.api_keys)
        ):
            raise ValueError("NEWSDIGEST_API_KEYS must hold at least one non-empty key in production")
        return self

    @property
    def uses_local_llm(self) -> bool:
        """No endpoint configured: the embedded model on 127.0.0.1 is used."""
        return self.llm_base_url is None

    @property
    def effective_base_url(self) -> str:
        return self.llm_base_url or f"http://{LOCAL_LLM_HOST}:{self.local_llm_port}/v1"

    @property
    def effective_timeout_s(self) -> float:
        if self.llm_timeout_s is not None:
            return self.llm_timeout_s
        return 900.0 if self.uses_local_llm else 120.0

    @property
    def article_section_chars(self) -> int | None:
        """Characters of numbered article one prompt can carry: the context less the answer and the
        prompt's own text, at 3.5 characters a token (numbered news text runs 3.5 to 4.2)."""
        tokens = self.llm_context_tokens or (self.local_llm_ctx if self.uses_local_llm else None)
        return None if tokens is None else max(2_000, (tokens - _ANSWER_AND_INSTRUCTIONS) * 7 // 2)

    @property
    def effective_mode(self) -> LLMMode:
        return self.llm_mode or ("json_object" if self.uses_local_llm else "json_schema")

    @property
    def effective_model(self) -> str:
        return self.llm_model or ("qwen2.5-coder-1.5b-instruct-q4" if self.uses_local_llm else "gpt-4o-mini")
