"""``newsdigest digest``: one cited digest of a story from its articles."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from schemas import PreparedArticle
from service import metrics
from service.cli.article_input import Files, load_all
from service.cli.console import err, progress
from service.cli.exit_codes import run
from service.cli.options import Model, Pins
from service.cli.output import check_out_file, emit
from service.cli.startup import load_settings, model_client
from service.errors import InputError
from service.pipeline import render
from service.pipeline.story import StoryOptions, digest_story, prepare_all
from service.pipeline.text import prepare
from service.prompts import PromptRegistry


class DigestFormat(StrEnum):
    json = "json"
    md = "md"
    html = "html"


FormatOption = Annotated[DigestFormat, typer.Option(
    help="md: Markdown with footnotes; json: the Digest object; html: the editor's page.")]
OutOption = Annotated[Path | None, typer.Option(
    "--out", help="Write to this file (its directory must exist) instead of standard output.")]
StoryOption = Annotated[str | None, typer.Option(help="Story id to record.")]


def digest(files: Files, format: FormatOption = DigestFormat.md, out_file: OutOption = None, prompt: Pins = None,
           story: StoryOption = None, model: Model = None) -> None:
    """One cited digest of a story from its articles."""
    settings = load_settings(model=model)
    check_out_file(out_file)

    async def work() -> str:
        registry = PromptRegistry.load(settings.prompts_dir, settings.prompt_versions)
        prompts = registry.resolve(prompt)
        loaded = load_all(files)
        for name, article in loaded:  # the digest goes on without them; say which file and why
            try:
                prepare(article, max_chars=settings.max_article_chars)
            except InputError as exc:
                err.print(f"[yellow]warning:[/yellow] {escape(name)}: {escape(exc.detail)}; left out of the digest",
                          highlight=False)
        ready, failed = prepare_all([article for _, article in loaded], max_chars=settings.max_article_chars)
        options = StoryOptions(sequential=settings.runs_sequentially, section_chars=settings.article_section_chars,
                               language=settings.digest_language, story_id=story)
        async with model_client(settings) as llm:
            with progress() as bar:
                task = bar.add_task(f"analysing {len(ready)} articles", total=len(ready) + 1)

                def step(stage: str, item: PreparedArticle | None) -> None:
                    label = f"analysed {item.outlet}" if item else "writing the digest"
                    bar.update(task, advance=1 if item else 0, description=label)

                result = await digest_story(ready, prompts, llm, options, failed=failed, on_progress=step)
        metrics.record_outcomes([result.provenance] if result.provenance else [])
        if format is DigestFormat.json:
            return render.digest_json(result)
        return render.digest_html(result) if format is DigestFormat.html else render.digest_markdown(result)

    emit(run(work()), out_file)
