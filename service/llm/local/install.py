"""llama-cpp-python's server, installed into this interpreter the first time the embedded model runs."""

from __future__ import annotations

import importlib
import subprocess
import sys

import structlog

from service.errors import ConfigError
from service.llm.local.progress import say

log = structlog.get_logger()

LLAMA_REQUIREMENT = "llama-cpp-python[server]>=0.3.2"


def _has_server() -> bool:
    try:
        importlib.import_module("llama_cpp.server")
    except ImportError:
        return False
    return True


def ensure_local_extra() -> None:
    """Install ``llama-cpp-python[server]`` into this interpreter if ``llama_cpp.server`` is missing."""
    if _has_server():
        return
    say(f"installing {LLAMA_REQUIREMENT} for the embedded model: the first time it compiles llama.cpp "
        "(about 7 minutes on 2 cores); pip keeps the built wheel, so later installs take seconds")
    log.warning("local_llm.installing", requirement=LLAMA_REQUIREMENT,
                note="compiles llama.cpp from source; takes about 7 minutes on 2 cores")
    # pip's wheel cache stays on: the compiled wheel is reused by every later venv of this user.
    rc = subprocess.run([sys.executable, "-m", "pip", "install", LLAMA_REQUIREMENT], check=False).returncode
    importlib.invalidate_caches()
    if rc != 0 or not _has_server():
        raise ConfigError(f"could not install {LLAMA_REQUIREMENT!r} (pip exit code {rc}) for the embedded model; "
                          "install it by hand or set NEWSDIGEST_LLM_BASE_URL to use another endpoint")
