"""``newsdigest eval``: gold stories through the pipeline, per variant (prompt versions, model),
as one table and one JSON file, so a prompt or model change is read as before and after."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from service.errors import InputError
from service.llm.port import Completer
from service.pipeline.story import StoryOptions
from service.prompts import PromptRegistry
from service.quality.score import StoryScore

__all__ = ["StoryScore", "Variant", "run_variant", "table", "write"]

#: Where the pytest suite keeps the recordings ``--replay`` plays back.
CASSETTES = "test_gold_stories"


@dataclass(frozen=True)
class Variant:
    """One column set of the comparison: prompt pins and, optionally, another model."""

    label: str
    pins: list[str] = field(default_factory=list)
    model: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Variant:
        """``key_facts@2,digest@2`` or ``model=gpt-4o-mini,digest@3``."""
        pins, model = [], None
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            if part.startswith("model="):
                model = part.removeprefix("model=")
            elif "@" in part:
                pins.append(part)
            else:
                raise InputError(f"--compare {spec!r}: {part!r} is neither name@version nor model=NAME")
        return cls(label=spec, pins=pins, model=model)


def recording(cassette_dir: Path, story: str, *, repeats: bool = False, ignore_hosts: tuple[str, ...] = ()) -> Any:
    """The story's recorded model answers, as a vcrpy cassette context that plays them back (offline,
    exact: requests match on method, path and body); ``repeats`` lets one answer serve twice, and
    requests to ``ignore_hosts`` pass through untouched."""
    try:
        import vcr  # dev dependency: replay is for developers and CI
    except ImportError as exc:
        raise InputError("--replay needs the dev extra (pip install -e '.[dev]')") from exc
    from service.quality import cassettes

    path = cassette_dir / CASSETTES / f"test_gold_story[{story}].yaml"
    if not path.exists():
        raise InputError(f"{path}: no recording of this story; record it with `make record`")
    recorder = vcr.VCR(record_mode="none", match_on=["method", "path", "body"], decode_compressed_response=True,
                       ignore_hosts=list(ignore_hosts))
    recorder.register_serializer("yaml", cassettes)
    return recorder.use_cassette(str(path), serializer="yaml", allow_playback_repeats=repeats)


@contextmanager
def replaying(cassette_dir: Path, story: str, *, replay: bool) -> Iterator[None]:
    """Play the story's recorded model answers back instead of calling the model, when ``replay``."""
    with recording(cassette_dir, story) if replay else nullcontext():
        yield


def table(results: dict[str, dict[str, StoryScore]]) -> Table:
    grid = Table("variant", "story", "facts", "outlets", "disagr. recall", "disagr. precision", "numbers ok",
                 "verbatim", "kept/repaired/re-asked/rejected", "calls", "tokens", "seconds")
    for label, scores in results.items():
        for story, s in [*scores.items(), ("all", total(list(scores.values())))]:
            grid.add_row(label, story, f"{s.facts_found}/{s.central_facts}", f"{s.outlet_coverage:.0%}",
                         f"{s.disagreements_found}/{s.disagreements}",
                         f"{s.disagreements_correct}/{s.disagreements_published}",
                         f"{s.statements_numbers_ok}/{s.statements}", f"{s.quotes_verbatim}/{s.quotes}",
                         f"{s.facts_kept}/{s.repaired}/{s.reasks}/{s.rejected}", str(s.calls), str(s.tokens),
                         f"{s.seconds:.1f}")
    return grid


def total(scores: list[StoryScore]) -> StoryScore:
    """All stories as one: counts added, outlet coverage averaged over the facts found."""
    summed: dict[str, Any] = {name: sum(getattr(s, name) for s in scores) for name, info in
                              StoryScore.model_fields.items() if info.annotation in (int, float, "int", "float")}
    found = sum(s.facts_found for s in scores)
    summed["outlet_coverage"] = round(sum(s.outlet_coverage * s.facts_found for s in scores) / found, 3) if found else 0
    summed["seconds"] = round(summed["seconds"], 1)
    return StoryScore(story_id="all", missing=[m for s in scores for m in s.missing],
                      missed_disagreements=[m for s in scores for m in s.missed_disagreements], **summed)


def write(path: Path, results: dict[str, dict[str, StoryScore]], *, model: str, mode: str) -> None:
    payload = {
        "model": model, "mode": mode,
        "variants": {label: {story: s.model_dump() for story, s in scores.items()} | {"all": total(
            list(scores.values())).model_dump()} for label, scores in results.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


async def run_variant(stories: list[Path], variant: Variant, registry: PromptRegistry, llm: Completer,
                      options: StoryOptions, *, max_chars: int, cassette_dir: Path,
                      replay: bool) -> dict[str, StoryScore]:
    from service.quality.run import evaluate

    prompts = registry.resolve(variant.pins)
    scores = {}
    for story in stories:
        with replaying(cassette_dir, story.name, replay=replay):
            scores[story.name], _ = await evaluate(story, prompts, llm, StoryOptions(
                sequential=options.sequential, section_chars=options.section_chars, language=options.language,
                story_id=story.name), max_chars=max_chars)
    return scores
