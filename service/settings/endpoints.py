"""The model endpoint's defaults: the embedded model on this machine, OpenAI for a bare key, and how
an endpoint on this machine is treated differently from a hosted one."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

#: Where the embedded local model server listens when no endpoint is configured.
LOCAL_LLM_HOST = "127.0.0.1"
LOCAL_LLM_PORT = 8765
#: The hosted default: an OpenAI key and no base URL means OpenAI itself.
OPENAI_BASE_URL = "https://api.openai.com/v1"
#: The embedded model's alias, as its server lists it on /v1/models.
LOCAL_LLM_MODEL = "qwen2.5-coder-1.5b-instruct-q4"
HOSTED_MODEL = "gpt-4o-mini"
#: Timeouts when none is set: an endpoint on this machine usually has one slot that finishes an
#: abandoned request before the next, so a short timeout there only queues copies of the same call.
LOOPBACK_TIMEOUT_S = 900.0
HOSTED_TIMEOUT_S = 120.0
LOOPBACK_CONCURRENCY = 1
HOSTED_CONCURRENCY = 4


def local_llm_url(port: int) -> str:
    """The embedded model server's OpenAI-compatible base URL."""
    return f"http://{LOCAL_LLM_HOST}:{port}/v1"


def is_loopback_url(url: str) -> bool:
    """True for an http(s) URL on 127.0.0.0/8, ::1 or localhost: an endpoint on this machine."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_openai_url(url: str) -> bool:
    """True for OpenAI itself and Azure OpenAI, the endpoints that take ``strict: true`` functions."""
    host = (urlsplit(url).hostname or "").lower()
    return host == "api.openai.com" or host.endswith((".openai.azure.com", ".openai.com"))
