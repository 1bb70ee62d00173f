"""``newsdigest analyze``: key facts and sentiment of each article on its own."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from schemas import PreparedArticle
from service import metrics
from service.cli.article_input import Files, load_all, prepare_named
from service.cli.console import progress
from service.cli.exit_codes import run
from service.cli.options import Model, Pins
from service.cli.output import emit
from service.cli.startup import load_settings, model_client
from service.pipeline import render
from service.pipeline.extract import extract_article
from service.prompts import PromptRegistry


class ArticleFormat(StrEnum):
    json = "json"
    md = "md"


FormatOption = Annotated[ArticleFormat, typer.Option(
    help="md: readable Markdown; json: one Extraction object per article (a list for several).")]


def analyze(files: Files, format: FormatOption = ArticleFormat.md, prompt: Pins = None, model: Model = None) -> None:
    """Key facts and sentiment of each article, each fact with its exact sentences."""
    settings = load_settings(model=model)

    async def work() -> list[str]:
        registry = PromptRegistry.load(settings.prompts_dir, settings.prompt_versions)
        prompts = registry.resolve(prompt)
        prepared: list[PreparedArticle] = [
            prepare_named(name, article, settings.max_article_chars) for name, article in load_all(files)
        ]
        rendered = []
        async with model_client(settings) as llm:
            with progress() as bar:
                for item in prepared:
                    task = bar.add_task(f"analysing {item.outlet}: {item.title[:60]}")
                    extraction = await extract_article(item, prompts, llm, sequential=settings.runs_sequentially,
                                                       section_chars=settings.article_section_chars)
                    metrics.record_outcomes(extraction.provenance.values())
                    bar.remove_task(task)
                    rendered.append(
                        extraction.model_dump_json(indent=2)
                        if format is ArticleFormat.json
                        else render.extraction_markdown(extraction)
                    )
        return rendered

    results = run(work())
    if format is ArticleFormat.json and len(results) > 1:
        emit("[\n" + ",\n".join(results) + "\n]", None)
    else:
        emit("\n\n".join(results), None)
