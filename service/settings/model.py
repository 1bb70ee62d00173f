"""Everything an operator can set, read from the environment (prefix ``NEWSDIGEST_``) and a ``.env``."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.settings import endpoints
from service.settings.env_values import (
    AbsolutePath,
    CallbackURL,
    DatabaseURL,
    EndpointURL,
    NameList,
    PromptVersions,
    SecretList,
    WaitList,
    WebhookSecret,
)
from service.settings.paths import DEFAULT_DATA_DIR, DEFAULT_PROMPTS_DIR, data_dir_of, default_model_dir

LLMMode = Literal["json_schema", "json_object", "tools"]
JobBackend = Literal["inprocess", "procrastinate"]

#: digest.updated retries, after attempt 1, 2, ...: about 27.6 hours in all (the Standard Webhooks
#: senders' own schedule), each wait jittered.
CALLBACK_RETRY_SCHEDULE_S = (5.0, 300.0, 1_800.0, 7_200.0, 18_000.0, 36_000.0, 36_000.0)

#: Tokens a prompt needs besides the article: the answer (max_tokens) and the system and task text.
_ANSWER_AND_INSTRUCTIONS = 1_700


class Settings(BaseSettings):
    """Everything an operator can set. ``Settings()`` reads the environment."""

    # validate_by_name: Settings(llm_api_key=...) works in code even though the env names are aliases.
    # env_file: a .env in the working directory is read too; the process environment wins over it.
    model_config = SettingsConfigDict(env_prefix="NEWSDIGEST_", extra="ignore", validate_by_name=True,
                                      env_file=".env", env_file_encoding="utf-8")

    # One directory for what the service keeps on disk: the SQLite database, the embedded model's pid
    # file and log. Relative paths are taken from the working directory; the value is absolute.
    data_dir: AbsolutePath = DEFAULT_DATA_DIR

    environment: Literal["development", "production"] = "development"

    # AliasChoices skips the prefix, so both spellings are written out.
    llm_base_url: EndpointURL | None = Field(
        default=None, validation_alias=AliasChoices("NEWSDIGEST_LLM_BASE_URL", "OPENAI_BASE_URL")
    )
    llm_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("NEWSDIGEST_LLM_API_KEY", "OPENAI_API_KEY")
    )
    llm_model: str | None = None
    llm_mode: LLMMode | None = None
    # Unset: 120 s for a hosted endpoint, 900 s for one on this machine (the embedded model included), whose
    # single slot finishes an abandoned request before the next, so a short timeout only piles retries onto it.
    llm_timeout_s: float | None = Field(default=None, gt=0)
    # Calls in flight at once. Unset: 1 for an endpoint on this machine (one slot: calls queue there anyway,
    # and back to back they share the article's prompt prefix), 4 for a hosted one.
    llm_max_concurrency: int | None = Field(default=None, ge=1)
    llm_max_attempts: int = Field(default=4, ge=1)
    llm_deadline_s: float = 600.0
    # tools mode: send the function with OpenAI's strict: true and the schema rewritten into its strict subset.
    # Unset: only for OpenAI and Azure OpenAI. Elsewhere (llama.cpp, vLLM, Ollama) the full schema goes as it is,
    # because they turn it into a grammar, and the strict rewrite would drop the length and count limits from it.
    llm_strict_tools: bool | None = None
    llm_retry_max_wait_s: float = 30.0
    llm_retry_initial_wait_s: float = 0.5
    llm_temperature: float | None = None
    # The model's context in tokens; an article longer than it holds is read in sections. Unset: the
    # embedded model's own context, and none for a hosted endpoint (128k-token models read any article whole).
    llm_context_tokens: int | None = Field(default=None, ge=2048)

    # The embedded server's pid file and log. Unset: DATA_DIR/local-llm.
    local_llm_dir: AbsolutePath = Field(default_factory=lambda data: data_dir_of(data) / "local-llm")
    local_llm_port: int = endpoints.LOCAL_LLM_PORT
    local_llm_ctx: int = 8192
    # Where the verified model file lives. Unset: the per-user cache (~/.cache/newsdigest/models), so every
    # checkout of this user reuses one assembled, sha256-checked model; or LOCAL_LLM_DIR when only that is set.
    model_dir: AbsolutePath | None = None

    database_url: DatabaseURL = Field(
        default_factory=lambda data: f"sqlite+aiosqlite:///{data_dir_of(data) / 'newsdigest.db'}")
    api_keys: SecretList = Field(default_factory=list)
    webhook_secret: WebhookSecret | None = None
    # Keys the HMAC that idempotency records keep instead of the API key (service/api/deps.py). Unset: derived
    # from the API keys and the webhook secret, so changing those forgets the Idempotency-Keys of the last day.
    key_hash_secret: SecretStr | None = None
    callback_url: CallbackURL | None = None
    callback_secret: WebhookSecret | None = None
    prompt_versions: PromptVersions = Field(default_factory=dict)
    prompts_dir: Path = DEFAULT_PROMPTS_DIR

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
    worker_name: str = Field(
        default_factory=socket.gethostname, min_length=1, max_length=100,
        description="This process's name, the same across restarts: a process takes back at once the jobs and "
        "Idempotency-Keys a dead earlier process of its name held on its host. Containers that share a hostname "
        "but not a process table need different names.",
    )
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
    callback_retry_schedule_s: WaitList = Field(
        default_factory=lambda: list(CALLBACK_RETRY_SCHEDULE_S), min_length=1,
        description="Seconds before the attempt after attempt 1, 2, ...; the last one repeats. The default "
        "spreads 8 attempts over about 27.6 hours.",
    )
    callback_retry_jitter: float = Field(
        default=0.2, ge=0, le=1, description="Each wait is drawn from wait * (1 - jitter) .. wait * (1 + jitter).")
    callback_retry_after_max_s: float = Field(
        default=86_400.0, ge=0, description="A CMS's Retry-After is honoured up to this many seconds.")

    # Beyond one machine (service/jobs/engine.py, service/ratelimit.py).
    job_backend: JobBackend = Field(
        default="inprocess",
        description="inprocess: the database worker (any database); procrastinate: the engine, on PostgreSQL.",
    )
    job_queues: NameList = Field(
        default_factory=list, description="Engine worker only: the job kinds it takes (empty: all of them)."
    )
    llm_requests_per_minute: int | None = Field(
        default=None, ge=1, description="Model calls started per rolling minute, across all workers on the database."
    )
    llm_tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Tokens per rolling minute (prompt estimate + max_tokens), across every worker."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Operations: Prometheus metrics of `newsdigest worker` (the API serves /metrics itself) and traces.
    worker_metrics_port: int = Field(
        default=9464, ge=0, le=65535, description="Port of the worker's /metrics; 0 turns it off.")
    worker_metrics_host: str = Field(default="127.0.0.1", description="Interface the worker's /metrics listens on.")
    otel_endpoint: str | None = Field(
        default=None, validation_alias=AliasChoices("NEWSDIGEST_OTEL_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/HTTP collector URL; set, it turns tracing on (needs the otel extra).",
    )
    otel_service_name: str = "newsdigest"

    @model_validator(mode="after")
    def _callbacks_are_signed(self) -> Settings:
        # An unsigned callback would teach the CMS to accept anyone's digest.updated events.
        if self.callback_url and self.callback_secret is None:
            raise ValueError("NEWSDIGEST_CALLBACK_URL needs NEWSDIGEST_CALLBACK_SECRET (whsec_...)")
        return self

    @model_validator(mode="after")
    def _embedded_modes(self) -> Settings:
        # llama-cpp-python's server admits only text and json_object as response_format (it answers a
        # json_schema request with a 500): tests/llm/test_llama_cpp_modes.py.
        if self.uses_local_llm and self.llm_mode == "json_schema":
            raise ValueError("NEWSDIGEST_LLM_MODE=json_schema does not work with the embedded model (its server "
                             "takes json_object or tools); unset it, or set an endpoint or key")
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
        """No endpoint and no key configured: the embedded model on 127.0.0.1 is used.

        A key without a base URL means OpenAI itself (``OPENAI_API_KEY`` alone is the hosted path).
        """
        return self.llm_base_url is None and self.llm_api_key is None

    @property
    def effective_base_url(self) -> str:
        if self.llm_base_url:
            return self.llm_base_url
        return endpoints.local_llm_url(self.local_llm_port) if self.uses_local_llm else endpoints.OPENAI_BASE_URL

    @property
    def llm_is_loopback(self) -> bool:
        """The endpoint runs on this machine (the embedded model, or an own server on 127.0.0.1/localhost/::1)."""
        return endpoints.is_loopback_url(self.effective_base_url)

    @property
    def effective_strict_tools(self) -> bool:
        """Whether tools mode sends ``strict: true`` functions (see ``llm_strict_tools``)."""
        if self.llm_strict_tools is not None:
            return self.llm_strict_tools
        return endpoints.is_openai_url(self.effective_base_url)

    @property
    def effective_timeout_s(self) -> float:
        if self.llm_timeout_s is not None:
            return self.llm_timeout_s
        return endpoints.LOOPBACK_TIMEOUT_S if self.llm_is_loopback else endpoints.HOSTED_TIMEOUT_S

    @property
    def effective_max_concurrency(self) -> int:
        """Model calls in flight at once: the setting, else 1 on this machine and 4 for a hosted endpoint."""
        if self.llm_max_concurrency is not None:
            return self.llm_max_concurrency
        return endpoints.LOOPBACK_CONCURRENCY if self.llm_is_loopback else endpoints.HOSTED_CONCURRENCY

    @property
    def runs_sequentially(self) -> bool:
        """Send an article's prompts back to back: the embedded model, or any endpoint served one call at a time
        (there a second prompt sent at once only waits, and back to back it reuses the first one's prefix)."""
        return self.uses_local_llm or self.effective_max_concurrency == 1

    @property
    def effective_model_dir(self) -> Path:
        """Where the embedded model's verified file lives (see ``model_dir``)."""
        if self.model_dir is not None:
            return self.model_dir
        if "local_llm_dir" in self.model_fields_set:
            return self.local_llm_dir  # set on its own, as before model_dir existed: the model stays with it
        return default_model_dir()

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
        return self.llm_model or (endpoints.LOCAL_LLM_MODEL if self.uses_local_llm else endpoints.HOSTED_MODEL)

    @property
    def otel_enabled(self) -> bool:
        return bool(self.otel_endpoint)
