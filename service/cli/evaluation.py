"""``newsdigest eval``: digests scored against the gold stories, for prompt and model variants side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli.console import err, out
from service.cli.exit_codes import run
from service.cli.options import Pins
from service.cli.startup import load_settings, model_client
from service.llm.factory import open_llm
from service.pipeline.story import StoryOptions
from service.prompts import PromptRegistry


def eval_command(
    stories: Annotated[list[Path] | None, typer.Argument(
        help="Gold story folders (default: every evals/*/ with a gold.yaml).")] = None,
    prompt: Pins = None,
    compare: Annotated[list[str] | None, typer.Option(
        "--compare", help="Another variant to score beside the active prompts: 'digest@2,key_facts@2' or "
        "'model=NAME' (repeatable).")] = None,
    replay: Annotated[bool, typer.Option(
        help="Replay the embedded model's recordings (offline, deterministic) instead of calling a model.")] = False,
    out_file: Annotated[Path, typer.Option("--out", help="Where the scores go as JSON.")] = Path(
        "benchmarks/results/eval.json"),
) -> None:
    """Score digests against gold annotations: central facts, outlets, disagreements, faithfulness, cost."""
    from service.quality import report
    from service.quality.gold import stories as gold_stories

    settings = load_settings()
    root = settings.prompts_dir.parent
    folders = stories or gold_stories(root / "evals")
    if not folders:
        err.print(f"[red]error:[/red] no gold story under {root / 'evals'}")
        raise typer.Exit(2)
    variants = [report.Variant(label="active" + (f" ({', '.join(prompt)})" if prompt else ""), pins=prompt or [])]
    variants += [report.Variant.parse(spec) for spec in compare or []]

    async def work() -> dict[str, dict[str, report.StoryScore]]:
        registry = PromptRegistry.load(settings.prompts_dir, settings.prompt_versions)
        options = StoryOptions(sequential=settings.runs_sequentially, section_chars=settings.article_section_chars,
                               language=settings.digest_language)
        results = {}
        for variant in variants:
            chosen = settings.model_copy(update={"llm_model": variant.model}) if variant.model else settings
            client = open_llm(chosen, shared_window=False) if replay else model_client(chosen)
            async with client as llm:
                results[variant.label] = await report.run_variant(
                    folders, variant, registry, llm, options, max_chars=settings.max_article_chars,
                    cassette_dir=root / "cassettes", replay=replay)
        return results

    results = run(work())
    out.print(report.table(results))
    report.write(out_file, results, model=settings.effective_model, mode=settings.effective_mode)
    err.print(f"wrote {out_file}")
