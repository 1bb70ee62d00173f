"""The embedded model's prefix reuse, measured: ``python -m benchmarks.embedded`` (``make bench-embedded``).

Needs the embedded model running (``newsdigest local-llm start``; ``make setup-local`` builds it).
For each example article, both article prompts are sent back to back twice:

- **shared prefix** (what newsdigest sends): every prompt opens with the same system text and the
  numbered article and ends with its task, so llama.cpp's one slot reuses the first prompt's
  evaluated article for the second;
- **task first** (the layout a plain script tends to write): each prompt's system message starts with
  its own task, then the article, so the second prompt shares no prefix with the first and the
  whole article is evaluated again.

The same messages otherwise, word for word, temperature 0. Reported: seconds per call, tokens, and
the second prompt's time against the first. A call takes 15-120 s on 2 cores: about 10 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from schemas import ArticleIn
from service.errors import LLMError
from service.extract import prompt_context
from service.llm import LLMClient
from service.prompts import Prompt, PromptRegistry
from service.settings import Settings
from service.text import prepare

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "embedded.json"
ARTICLES = ["observer-wang-joins-meta.json", "techblog-wang-meta.json"]
ORDER = ("key_facts", "sentiment")


def task_first(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The same words with the task moved to the front of the system message."""
    system, user = messages[0]["content"], messages[1]["content"]
    article, _, task = user.partition("\nTASK:")
    return [{"role": "system", "content": f"TASK:{task.strip()}\n\n{system}"},
            {"role": "user", "content": article.strip()}]


async def one_layout(llm: LLMClient, prompts: dict[str, Prompt], article: ArticleIn,
                     layout: str) -> list[dict[str, Any]]:
    prepared = prepare(article, max_chars=60_000)
    rows = []
    for name in ORDER:
        prompt = prompts[name]
        messages = prompt.messages(**prompt_context(prepared))
        if layout == "task first":
            messages = task_first(messages)
        started = time.monotonic()
        try:
            completion = await llm.complete(prompt, messages)
            usage, error = completion.usage, None
        except LLMError as exc:  # a refusal or a cut-off answer still took its time
            usage, error = exc.usage, exc.detail
        rows.append({
            "article": article.outlet, "sentences": len(prepared.sentences), "layout": layout, "prompt": prompt.ref,
            "seconds": round(time.monotonic() - started, 1),
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None, "error": error,
        })
        print(f"  {article.outlet} {layout} {prompt.ref}: {rows[-1]['seconds']} s", file=sys.stderr)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| article | layout | key facts s (tokens in/out) | sentiment s (tokens in/out) | "
             "sentiment / key facts | both prompts s |", "|---|---|---:|---:|---:|---:|"]
    for i in range(0, len(rows), 2):
        facts, sentiment = rows[i], rows[i + 1]
        lines.append(
            f"| {facts['article']} ({facts['sentences']} sentences) | {facts['layout']} | {facts['seconds']} "
            f"({facts['input_tokens']}/{facts['output_tokens']}) | {sentiment['seconds']} "
            f"({sentiment['input_tokens']}/{sentiment['output_tokens']}) | "
            f"{sentiment['seconds'] / facts['seconds']:.2f} | {facts['seconds'] + sentiment['seconds']:.1f} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    settings = Settings()
    if not settings.uses_local_llm:
        sys.exit("benchmarks.embedded measures the embedded model: unset NEWSDIGEST_LLM_BASE_URL")
    prompts = PromptRegistry.load(ROOT / "prompts").resolve()
    llm = LLMClient(settings)
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        for name in args.articles:
            article = ArticleIn.model_validate_json((ROOT / "examples" / "articles" / name).read_text())
            for layout in ("shared prefix", "task first"):
                rows += await one_layout(llm, prompts, article, layout)
    finally:
        await llm.close()
    table = markdown(rows)
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "command": "python -m benchmarks.embedded",
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "model": settings.llm_model, "prompts": {p.ref: p.sha256[:12] for p in prompts.values()},
        "rows": rows, "markdown": table,
    }, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {RESULTS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("articles", nargs="*", default=ARTICLES, help="files under examples/articles")
    asyncio.run(main(parser.parse_args()))
