"""schemas/json/ matches the models, and ``schemas.__all__`` is the sorted list of public models."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

from pydantic import BaseModel

import schemas
from schemas.export import JSON_DIR, REQUESTS, RESPONSES, export

MODULES = [importlib.import_module(f"schemas.{m.name}") for m in pkgutil.iter_modules(schemas.__path__)
           if m.name != "export"]


def test_exported_json_schemas_are_up_to_date(tmp_path: Path) -> None:
    fresh = {path.name: path.read_text(encoding="utf-8") for path in export(tmp_path)}
    committed = {path.name: path.read_text(encoding="utf-8") for path in JSON_DIR.glob("*.json")}

    assert sorted(committed) == sorted(fresh), "run `python -m schemas.export`"
    stale = sorted(name for name in fresh if committed[name] != fresh[name])
    assert not stale, f"out of date: {stale}; run `python -m schemas.export`"


def test_every_request_and_response_of_the_api_is_exported() -> None:
    exported = {model.__name__ for model in REQUESTS + RESPONSES}

    assert {"ArticleIn", "DigestRequest", "JobAccepted", "JobView", "ArticleView", "DigestView", "Problem",
            "PromptCatalog", "ArticlePublished", "ArticleUpdated", "ArticleDeleted", "WebhookAck",
            "DigestUpdated"} <= exported
    assert (JSON_DIR / "CmsEvent.json").exists()


def test_all_is_sorted() -> None:
    assert schemas.__all__ == sorted(schemas.__all__)


def test_all_matches_the_public_models() -> None:
    public = {
        name for module in MODULES for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
        and (inspect.isclass(value) and issubclass(value, BaseModel))
    }
    aliases = {"SentimentLabel"}  # a Literal type, exported because models and prompts share it

    assert set(schemas.__all__) == public | aliases
    assert all(getattr(schemas, name) is not None for name in schemas.__all__)
