"""What serves on the embedded model's port: whether it answers, and whether it is ours.

A server another checkout started on the same port (its command line, or its ``/v1/models``, names
our model alias) is ours too: it is reused, not refused.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx

from service.settings import Settings, local_llm_url


def server_url(settings: Settings) -> str:
    return local_llm_url(settings.local_llm_port)


def answers(settings: Settings) -> bool:
    """True if GET /v1/models answers 200, or the server accepted the connection but is busy.

    The server loads the model before it listens, and /v1/models waits for the model's lock, so
    a read timeout means a completion is in progress, not that the server is down.
    """
    try:
        return httpx.get(server_url(settings) + "/models", timeout=2.0, trust_env=False).status_code == 200
    except httpx.ReadTimeout:
        return True
    except httpx.HTTPError:
        return False


def server_pid_on_port(settings: Settings) -> int | None:
    """A running llama_cpp.server of ours (our model alias) on our port, whichever checkout started it."""
    port, alias = str(settings.local_llm_port).encode(), settings.effective_model.encode()
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if not any(arg.endswith(b"llama_cpp.server") for arg in args):
                continue
            if _flag(args, b"--port") == port and _flag(args, b"--model_alias") == alias:
                return int(entry.name)
    return None


def _flag(args: list[bytes], name: bytes) -> bytes | None:
    with contextlib.suppress(ValueError, IndexError):
        return args[args.index(name) + 1]
    return None


def _lists_our_model(settings: Settings) -> bool:
    """True if /v1/models on our port names our model alias (a server another checkout started)."""
    try:
        response = httpx.get(server_url(settings) + "/models", timeout=2.0, trust_env=False)
        ids = {str(item.get("id")) for item in response.json().get("data", []) if isinstance(item, dict)}
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
    return response.status_code == 200 and settings.effective_model in ids


def ours_elsewhere(settings: Settings) -> tuple[bool, int | None]:
    """(is the server on our port one of ours started by another checkout, its pid if this machine shows it)."""
    pid = server_pid_on_port(settings)
    if pid is not None:
        return True, pid
    return _lists_our_model(settings), None
