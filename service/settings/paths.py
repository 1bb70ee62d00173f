"""Where the service keeps things on disk when the operator names no place."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: The checkout this code runs from; ``data/`` under it is the default data directory.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = PROJECT_ROOT / "data"
DEFAULT_PROMPTS_DIR = PROJECT_ROOT / "prompts"


def default_model_dir() -> Path:
    """The per-user cache every checkout shares: ``$XDG_CACHE_HOME/newsdigest/models`` or ``~/.cache/...``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser().resolve() / "newsdigest" / "models"


def data_dir_of(data: dict[str, Any]) -> Path:
    """The data directory among already validated fields (the defaults of the paths under it)."""
    value = data.get("data_dir")
    return value if isinstance(value, Path) else DEFAULT_DATA_DIR
