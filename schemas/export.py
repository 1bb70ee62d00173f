"""Write the JSON Schema of every request, response and webhook payload to ``schemas/json/``.

CMS developers validate against these files without reading Python; a test regenerates them and
fails on any difference, so they never drift from the models. Run ``python -m schemas.export``
after changing a model, and add a model here when the API starts to read or send it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from schemas.api import (
    ArticleView,
    DigestRequest,
    DigestView,
    Health,
    JobAccepted,
    JobView,
    Problem,
    PromptCatalog,
    Readiness,
)
from schemas.article import ArticleIn
from schemas.digest import Digest
from schemas.extraction import Extraction
from schemas.webhooks import ArticleDeleted, ArticlePublished, ArticleUpdated, CmsEvent, DigestUpdated, WebhookAck

JSON_DIR = Path(__file__).resolve().parent / "json"

#: What a client sends (requests, CMS webhook events): validated as the API reads it.
REQUESTS: tuple[type[BaseModel], ...] = (ArticleDeleted, ArticleIn, ArticlePublished, ArticleUpdated, DigestRequest)
#: What the API answers and what its callbacks send: as the API writes it.
RESPONSES: tuple[type[BaseModel], ...] = (
    ArticleView, Digest, DigestUpdated, DigestView, Extraction, Health, JobAccepted, JobView, Problem, PromptCatalog,
    Readiness, WebhookAck,
)
#: Unions that are not models: any one CMS event, told apart by ``type``.
UNIONS: dict[str, Any] = {"CmsEvent": CmsEvent}


def schema_text(name: str, schema: dict[str, Any]) -> str:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"{name}.json", **schema}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def export(directory: Path = JSON_DIR) -> list[Path]:
    """(Re)write one ``<Name>.json`` per model and remove files of models no longer exported."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    batches: tuple[tuple[tuple[type[BaseModel], ...], Literal["validation", "serialization"]], ...] = (
        (REQUESTS, "validation"), (RESPONSES, "serialization"))
    schemas = {model.__name__: model.model_json_schema(mode=mode) for models, mode in batches for model in models}
    schemas.update({name: TypeAdapter(union).json_schema(mode="validation") for name, union in UNIONS.items()})
    for name, schema in schemas.items():
        path = directory / f"{name}.json"
        path.write_text(schema_text(name, schema), encoding="utf-8")
        written.append(path)
    for stale in set(directory.glob("*.json")) - set(written):
        stale.unlink()
    return sorted(written)


if __name__ == "__main__":
    for path in export(Path(sys.argv[1]) if len(sys.argv) > 1 else JSON_DIR):
        sys.stdout.write(f"{path}\n")
