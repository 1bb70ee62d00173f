"""The embedded model's prefix reuse, measured: ``python -m benchmarks.embedded`` (``make bench-embedded``).

Needs the embedded model running (``newsdigest local-llm start``; ``make setup-local`` builds it).
For each example article, both article prompts are sent back to back twice:

- **shared prefix** (what newsdigest sends): every prompt opens with the same system text and the
  numbered article and ends with its task, so llama.cpp's one slot reuses the first prompt's
  evaluated article for the second;
- **task first** (the layout a plain script tends to write): each prompt's system message starts with
  its own task, then the article, so the second prompt shares no prefix with the first and the
  whole article is evaluated again.

The same messages otherwise, word for word, temperature 0. Reported per call: wall seconds, tokens,
and from llama.cpp's own log lines the prompt tokens it reused from the previous call, the ones it
evaluated, and the seconds spent on each phase; then the second prompt's prompt-evaluation time
against the first's (generation differs with the answer's length, so it is shown apart). A call
takes 15-120 s on 2 cores: about 10 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from schemas import ArticleIn
from service.errors import LLMError
from service.llm.client import LLMClient
from service.pipeline.extract import prompt_context
from service.pipeline.text import prepare
from service.prompts import Prompt, PromptRegistry
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "embedded.json"
ARTICLES = ["observer-wang-joins-meta.json", "techblog-wang-meta.json"]
ORDER = ("key_facts", "sentiment")
# llama.cpp's own account of a call, in the server log (service.llm.local writes it there).
_PREFIX = re.compile(r"(\d+) prefix-match hit, remaining (\d+) prompt tokens to eval")
_PROMPT_EVAL = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens")
_GENERATION = re.compile(r"\beval time =\s*([\d.]+) ms /\s*(\d+) runs")


def server_timings(log_text: str) -> dict[str, Any]:
    """What llama.cpp logged for one call: prompt tokens reused from the previous call, evaluated, and times."""
    prefix = _PREFIX.findall(log_text)
    prompt = _PROMPT_EVAL.findall(log_text)
    generation = [m for m in _GENERATION.findall(log_text)]
    return {
        "reused_tokens": int(prefix[-1][0]) if prefix else 0,
        "evaluated_tokens": int(prompt[-1][1]) if prompt else None,
        "prompt_eval_s": round(float(prompt[-1][0]) / 1000, 1) if prompt else None,
        "generation_s": round(float(generation[-1][0]) / 1000, 1) if generation else None,
    }


def task_first(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The same words with the task moved to the front of the system message."""
    system, user = messages[0]["content"], messages[1]["content"]
    article, _, task = user.partition("\nTASK:")
    return [{"role": "system", "content": f"TASK:{task.strip()}\n\n{system}"},
            {"role": "user", "content": article.strip()}]


def _read_from(path: Path, offset: int) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read().decode("utf-8", "replace")


async def one_layout(llm: LLMClient, prompts: dict[str, Prompt], article: ArticleIn, layout: str,
                     server_log: Path) -> list[dict[str, Any]]:
    prepared = prepare(article, max_chars=60_000)
    rows = []
    for name in ORDER:
        prompt = prompts[name]
        messages = prompt.messages(**prompt_context(prepared))
        if layout == "task first":
            messages = task_first(messages)
        log_start = server_log.stat().st_size if server_log.exists() else 0
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
            **server_timings(_read_from(server_log, log_start)),
        })
        print(f"  {article.outlet} {layout} {prompt.ref}: {rows[-1]['seconds']} s", file=sys.stderr)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| article | layout | prompt | tokens in / reused / evaluated | prompt eval s | tokens out | "
             "generation s | wall s |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['article']} ({r['sentences']} sentences) | {r['layout']} | {r['prompt']} | {r['input_tokens']} / "
            f"{r['reused_tokens']} / {r['evaluated_tokens']} | {r['prompt_eval_s']} | {r['output_tokens']} | "
            f"{r['generation_s']} | {r['seconds']} |")
    lines += ["", "| article | layout | second prompt's prompt eval / first's | both prompts, prompt eval s | "
              "both prompts, wall s |", "|---|---|---:|---:|---:|"]
    for i in range(0, len(rows), 2):
        first, second = rows[i], rows[i + 1]
        if first["prompt_eval_s"] and second["prompt_eval_s"] is not None:
            ratio = f"{second['prompt_eval_s'] / first['prompt_eval_s']:.2f}"
            both = f"{first['prompt_eval_s'] + second['prompt_eval_s']:.1f}"
        else:
            ratio = both = "n/a"
        lines.append(f"| {first['article']} | {first['layout']} | {ratio} | {both} | "
                     f"{first['seconds'] + second['seconds']:.1f} |")
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
                rows += await one_layout(llm, prompts, article, layout, settings.local_llm_dir / "server.log")
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
