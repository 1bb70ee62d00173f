"""Settings from the environment (prefix ``NEWSDIGEST_``); never built at import time.

``model`` declares every setting and what follows from it, ``env_values`` reads the shorthand an
operator writes (comma lists, ``key_facts@2``), ``endpoints`` and ``paths`` hold the defaults for the
model endpoint and the disk, and ``messages`` turns a refusal into one line naming the variable.
"""

from service.settings.endpoints import (
    HOSTED_CONCURRENCY,
    HOSTED_TIMEOUT_S,
    LOCAL_LLM_HOST,
    LOCAL_LLM_MODEL,
    LOCAL_LLM_PORT,
    LOOPBACK_CONCURRENCY,
    LOOPBACK_TIMEOUT_S,
    OPENAI_BASE_URL,
    is_loopback_url,
    local_llm_url,
)
from service.settings.messages import env_name, settings_error
from service.settings.model import CALLBACK_RETRY_SCHEDULE_S, JobBackend, LLMMode, Settings
from service.settings.paths import DEFAULT_DATA_DIR, PROJECT_ROOT, default_model_dir

__all__ = [
    "CALLBACK_RETRY_SCHEDULE_S",
    "DEFAULT_DATA_DIR",
    "HOSTED_CONCURRENCY",
    "HOSTED_TIMEOUT_S",
    "LOCAL_LLM_HOST",
    "LOCAL_LLM_MODEL",
    "LOCAL_LLM_PORT",
    "LOOPBACK_CONCURRENCY",
    "LOOPBACK_TIMEOUT_S",
    "OPENAI_BASE_URL",
    "PROJECT_ROOT",
    "JobBackend",
    "LLMMode",
    "Settings",
    "default_model_dir",
    "env_name",
    "is_loopback_url",
    "local_llm_url",
    "settings_error",
]
