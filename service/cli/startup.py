"""What every command sets up before its work: the settings, logging and tracing, and a model client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service import tracing
from service.cli.console import err
from service.cli.exit_codes import fail
from service.llm.client import LLMClient
from service.llm.factory import open_llm
from service.logs import configure_logging
from service.settings import Settings, settings_error


def load_settings(*, model: str | None = None) -> Settings:
    """The settings from the environment, ``model`` overriding the model name; invalid ones exit 4."""
    try:
        settings = Settings()
    except ValueError as exc:  # pydantic's ValidationError and pydantic-settings' SettingsError
        raise fail(f"invalid settings: {settings_error(exc)}", 4) from None
    if model:
        settings = settings.model_copy(update={"llm_model": model})
    configure_logging(settings)  # logs go to stderr, so `--format json` output stays parseable
    tracing.configure(settings)
    return settings


@asynccontextmanager
async def model_client(settings: Settings) -> AsyncIterator[LLMClient]:
    """The client for ``settings``, with the embedded model started first when it is the one used."""
    if settings.uses_local_llm:
        from service.llm import local as local_llm

        if not local_llm.status(settings).running:
            err.print("No LLM endpoint or key configured: starting the embedded local model "
                      "(the first time takes minutes; set OPENAI_API_KEY or NEWSDIGEST_LLM_BASE_URL to use another)…")
            await asyncio.to_thread(local_llm.start, settings)
    async with open_llm(settings, shared_window=False) as client:
        yield client
