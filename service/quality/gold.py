"""Gold annotations of a story: its central facts and its known disagreements, each located by
verbatim excerpts of the sentences that state it (``evals/<story>/gold.yaml``, see evals/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import ArticleIn
from service.errors import InputError, validation_lines

Evidence = dict[str, list[str]]  # article slug -> verbatim excerpts of its sentences


class CentralFact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    about: str
    stated_in: Evidence = Field(min_length=1)


class Side(BaseModel):
    model_config = ConfigDict(extra="forbid")

    says: str
    evidence: Evidence = Field(min_length=1)


class GoldDisagreement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    about: str
    kind: str
    sides: list[Side] = Field(min_length=2)


class Gold(BaseModel):
    model_config = ConfigDict(extra="forbid")

    story_id: str
    title: str
    articles: list[str] = Field(min_length=1)
    central_facts: list[CentralFact]
    disagreements: list[GoldDisagreement] = Field(default_factory=list)


class GoldStory(BaseModel):
    gold: Gold
    articles: dict[str, ArticleIn]  # slug -> article, in the gold file's order


def load_story(directory: Path) -> GoldStory:
    """The gold file of ``directory`` and its articles, ids set to their slugs so citations name them."""
    path = directory / "gold.yaml"
    try:
        gold = Gold.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise InputError(f"{path}: no gold file") from None
    except ValidationError as exc:
        raise InputError(f"{path}: {'; '.join(validation_lines(exc))}") from exc
    articles = {}
    for name in gold.articles:
        file = (directory / name).resolve()
        article = ArticleIn.model_validate(json.loads(file.read_text(encoding="utf-8")))
        articles[file.stem] = article.model_copy(update={"id": file.stem})
    return GoldStory(gold=gold, articles=articles)


def stories(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/gold.yaml"))
