"""Reproducible performance run: ``python -m benchmarks.run`` (``make bench``), about six minutes.

In one run, side by side, against ``tests/fake_openai.py`` in its computed mode (a fixed delay per call, valid
answers; started here as a subprocess on 127.0.0.1):

(a) wall time of a story digest (``service.pipeline.story.digest_story``) of 5 and 20 synthetic articles,
    concurrent (``llm_max_concurrency=8``, ``sequential=False``) against the sequential baseline
    (concurrency 1, ``sequential=True``), with the ratio to the critical path: one extraction round
    (both prompts of every article at once) plus the digest call, i.e. 2 x delay, plus a round per
    re-ask; and to the bound the semaphore sets (ceil(calls / concurrency) rounds);
(b) per LLM call, ``CallUsage.latency_ms`` (the model's time: the HTTP attempts) minus the injected
    delay, and ``CallUsage.queue_ms`` (the wait for a concurrency slot), apart;
(c) prompt size per article and prompt against the article's own length (characters, and the
    stub's prompt_tokens = characters / 4);
(d) tokens per call recorded from the real embedded model in ``cassettes/test_gold_stories/*.yaml`` (the gold stories);
(e)-(g) the running service from a second process (``benchmarks/service_load.py``): API overhead
    per request, a webhook burst processed exactly once, an unchanged article re-submitted;
(h) the intake under a burst on SQLite and on PostgreSQL (``benchmarks/intake.py``): accepted events
    per second at 32 in flight from one API process, p50/p99, and the event loop's longest lag;
(i) the cost of one model call beside a plain AsyncOpenAI call (``benchmarks/per_call.py``).

The embedded model's prefix reuse is measured apart (``python -m benchmarks.embedded``): it needs
the model running and ten minutes.

Prints Markdown tables and writes ``benchmarks/results/latest.json``. Nothing here is asserted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
import yaml

from benchmarks import intake, per_call, service_load
from schemas import ArticleIn, CallUsage
from service.errors import LLMError
from service.llm.client import LLMClient
from service.llm.port import Completion
from service.pipeline.story import StoryOptions, digest_story, prepare_all
from service.pipeline.text import prepare
from service.prompts import Prompt, PromptRegistry
from service.settings import Settings
from tests import fake_openai
from tests.fake_openai import prompt_name

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
CASSETTES = ROOT / "cassettes" / "test_gold_stories"
DELAY_S = 0.5
CONCURRENCY = 8
REASK_MARKER = "(corrected)"
MAX_CHARS = 60_000


# --- synthetic articles --------------------------------------------------------------------------

_TEMPLATES = [
    "The Lakeside council approved {m} million euros for the harbour bridge on Tuesday, report {i} says.",
    "Mayor Ana Ruiz said the bridge would open in {y} if work starts this spring.",
    "The vote was {a} to {b} after a debate that lasted {h} hours.",
    "Engineers from firm {i}Build estimated the span at {s} metres.",
    "Opposition leader Tom Varga called the plan rushed and asked for an audit of cost item {k}.",
    "Residents near pier {k} worry about {n} weeks of construction noise.",
    "The regional government will cover {p} percent of the cost, officials told outlet {i}.",
    "Traffic on the old ferry route fell by {q} percent last year.",
    "A spokesperson for the port authority said contract {i}-{k} would be tendered in May.",
    "Shop owners on Quay Street number {k} expect more visitors once the bridge opens.",
]


def synthetic_story(count: int, reasked: int = 0) -> list[ArticleIn]:
    """``count`` distinct articles of 8 to 31 sentences; the first ``reasked`` ones trigger one re-ask."""
    articles = []
    for i in range(1, count + 1):
        sentences = 8 + (i * 7) % 24
        body = " ".join(
            _TEMPLATES[k % len(_TEMPLATES)].format(
                i=i,
                k=k,
                m=10 + i,
                y=2026 + i % 3,
                a=5 + i % 4,
                b=k % 5,
                h=2 + k % 7,
                s=300 + 10 * i,
                n=6 + k,
                p=20 + i % 50,
                q=3 + k % 20,
            )
            for k in range(1, sentences + 1)
        )
        title = f"Harbour bridge vote, report {i}" + (f" {REASK_MARKER}" if i <= reasked else "")
        articles.append(
            ArticleIn(id=f"bench-{i}", story_id="harbour-bridge", outlet=f"Outlet {i:02d}", title=title, body=body)
        )
    return articles


# --- the measured runs ---------------------------------------------------------------------------


@dataclass
class Recorder:
    """The injected Completer: the real LLMClient, with each call's usage and outer wall time kept."""

    llm: LLMClient
    calls: list[tuple[CallUsage, float]] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.llm.model

    @property
    def mode(self) -> str:
        return self.llm.mode

    async def complete(self, prompt: Prompt, messages: list[dict[str, str]]) -> Completion:
        started = time.monotonic()
        try:
            completion = await self.llm.complete(prompt, messages)
        except LLMError as exc:
            if exc.usage is not None:
                self.calls.append((exc.usage, time.monotonic() - started))
            raise
        self.calls.append((completion.usage, time.monotonic() - started))
        return completion


def settings(port: int, concurrency: int) -> Settings:
    return Settings(
        llm_base_url=f"http://127.0.0.1:{port}/v1",
        llm_api_key="bench",
        llm_model="latency-stub",
        llm_mode="json_object",
        llm_max_concurrency=concurrency,
        llm_timeout_s=30,
        llm_retry_initial_wait_s=0,
        llm_retry_max_wait_s=0,
    )


def stub_stats(port: int, *, clear: bool = False) -> list[dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/stats", method="DELETE" if clear else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        data: list[dict[str, Any]] = json.load(response)
    return data


async def story_digest(articles: list[ArticleIn], prompts: dict[str, Prompt], llm: Any, *, sequential: bool) -> Any:
    """As the CLI builds a story's digest: every article prepared, then the one story orchestration."""
    ready, failed = prepare_all(articles, max_chars=MAX_CHARS)
    return await digest_story(ready, prompts, llm, StoryOptions(sequential=sequential), failed=failed)


async def warm_up(port: int, prompts: dict[str, Prompt]) -> None:
    """One story of one article first, so one-time costs (imports, client set-up) stay out of timings."""
    llm = LLMClient(settings(port, 1))
    try:
        await story_digest(synthetic_story(1), prompts, llm, sequential=True)
    finally:
        await llm.close()


async def measure(
    port: int, prompts: dict[str, Prompt], articles: list[ArticleIn], *, sequential: bool
) -> dict[str, Any]:
    concurrency = 1 if sequential else CONCURRENCY
    stub_stats(port, clear=True)
    recorder = Recorder(LLMClient(settings(port, concurrency)))
    try:
        started = time.monotonic()
        digest = await story_digest(articles, prompts, recorder, sequential=sequential)
        wall = time.monotonic() - started
    finally:
        await recorder.llm.close()
    stats = stub_stats(port)
    digest_calls = sum(1 for s in stats if "digest" in s["prompt"].lower())
    extraction_calls = len(stats) - digest_calls
    reasks = sum(1 for s in stats if s["messages"] > 2)
    rounds = 1 + (1 if reasks else 0)  # every first ask at once, then the re-asks at once
    critical = (rounds + digest_calls) * DELAY_S
    bound = (math.ceil(extraction_calls / concurrency) + digest_calls) * DELAY_S
    return {
        "articles": len(articles),
        "mode": "sequential" if sequential else "concurrent",
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "calls": len(stats),
        "reasks": reasks,
        "statements": len(digest.statements),
        "sources_used": sum(1 for s in digest.sources if s.status == "used"),
        "critical_path_s": critical,
        "semaphore_bound_s": bound,
        "delay_total_s": round(len(stats) * DELAY_S, 3),
        "latency_ms": [usage.latency_ms for usage, _ in recorder.calls],
        "queue_ms": [usage.queue_ms for usage, _ in recorder.calls],
        "outer_ms": [round(outer * 1000, 2) for _, outer in recorder.calls],
        "server_ms": [s["server_ms"] for s in stats],
        "stats": stats,
    }


# --- reporting -----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] if ordered else float("nan")


def overhead(runs: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """latency_ms minus the injected delay, and queue_ms, per call, over every run of one mode."""
    values = [ms - DELAY_S * 1000 for run in runs if run["mode"] == mode for ms in run["latency_ms"]]
    queued = [ms for run in runs if run["mode"] == mode for ms in run["queue_ms"]]
    server = [ms - DELAY_S * 1000 for run in runs if run["mode"] == mode for ms in run["server_ms"]]
    return {
        "calls": len(values),
        "median_ms": round(statistics.median(values), 1),
        "p95_ms": round(pct(values, 0.95), 1),
        "max_ms": round(max(values), 1),
        "queue_median_ms": round(statistics.median(queued), 1),
        "queue_p95_ms": round(pct(queued, 0.95), 1),
        "queue_max_ms": round(max(queued), 1),
        "stub_own_median_ms": round(statistics.median(server), 2),
    }


def prompt_sizes(run: dict[str, Any], articles: list[ArticleIn]) -> dict[str, Any]:
    """Characters the model reads per prompt against the article's own text, first asks only."""
    text_chars = {}
    for article in articles:
        prepared = prepare(article, max_chars=MAX_CHARS)
        text_chars[article.title] = (len(prepared.text), len(prepared.sentences))
    per_prompt: dict[str, list[dict[str, Any]]] = {}
    for s in run["stats"]:
        if s["messages"] > 2:
            continue
        title = next((t for t in text_chars if s["first_line"].endswith(t)), None)
        if title is None or "digest" in s["prompt"].lower():  # the digest prompt: all articles' facts
            per_prompt.setdefault(s["prompt"], []).append(
                {"message_chars": s["message_chars"], "prompt_tokens": s["prompt_tokens"]}
            )
            continue
        chars, sentences = text_chars[title]
        per_prompt.setdefault(s["prompt"], []).append(
            {
                "article": title,
                "article_chars": chars,
                "sentences": sentences,
                "message_chars": s["message_chars"],
                "prompt_tokens": s["prompt_tokens"],
                "completion_tokens": s["completion_tokens"],
            }
        )
    summary = {}
    for name, rows in per_prompt.items():
        entry: dict[str, Any] = {
            "calls": len(rows),
            "median_message_chars": statistics.median(r["message_chars"] for r in rows),
            "median_prompt_tokens": statistics.median(r["prompt_tokens"] for r in rows),
        }
        if rows and "article_chars" in rows[0]:
            xs = [r["article_chars"] for r in rows]
            ys = [r["message_chars"] for r in rows]
            fit = statistics.linear_regression(xs, ys) if len(set(xs)) > 1 else None
            entry |= {
                "median_article_chars": statistics.median(xs),
                "article_chars_range": [min(xs), max(xs)],
                "median_ratio": round(statistics.median(y / x for x, y in zip(xs, ys, strict=True)), 3),
                "fixed_chars": round(fit.intercept) if fit else None,
                "chars_per_article_char": round(fit.slope, 3) if fit else None,
            }
        summary[name] = {"summary": entry, "rows": rows}
    return summary


def _body(part: dict[str, Any]) -> Any:
    if "parsed_body" in part:
        return part["parsed_body"]
    body = part.get("body")
    raw = body.get("string") if isinstance(body, dict) else body
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def cassette_tokens() -> dict[str, Any]:
    """Tokens per call as the embedded model counted them; timing only if a header carried it."""
    calls = []
    timing_headers: set[str] = set()
    for path in sorted(CASSETTES.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue  # being re-recorded right now
        for interaction in data.get("interactions") or []:
            request, response = _body(interaction["request"]) or {}, _body(interaction["response"]) or {}
            headers = {h.lower() for h in (interaction["response"].get("headers") or {})}
            timing_headers |= {h for h in headers if "ms" in h or "time" in h or "duration" in h}
            usage = response.get("usage") or {}
            if not usage:
                continue
            messages = request.get("messages") or []
            chars = sum(len(str(m.get("content") or "")) for m in messages)
            choice = (response.get("choices") or [{}])[0]
            calls.append(
                {
                    "cassette": path.name,
                    "prompt": prompt_name(request),
                    "reask": len(messages) > 2,
                    "prompt_tokens": usage.get("prompt_tokens", 0),
                    "completion_tokens": usage.get("completion_tokens", 0),
                    "message_chars": chars,
                    "finish_reason": choice.get("finish_reason"),
                }
            )
    per_prompt = {}
    for name in sorted({c["prompt"] for c in calls}):
        rows = [c for c in calls if c["prompt"] == name]
        per_prompt[name] = {
            "calls": len(rows),
            "reasks": sum(r["reask"] for r in rows),
            "median_prompt_tokens": statistics.median(r["prompt_tokens"] for r in rows),
            "max_prompt_tokens": max(r["prompt_tokens"] for r in rows),
            "median_completion_tokens": statistics.median(r["completion_tokens"] for r in rows),
            "chars_per_prompt_token": round(
                sum(r["message_chars"] for r in rows) / max(1, sum(r["prompt_tokens"] for r in rows)), 2
            ),
            "finish_reasons": sorted({str(r["finish_reason"]) for r in rows}),
        }
    return {
        "cassettes": sorted({c["cassette"] for c in calls}),
        "per_prompt": per_prompt,
        "calls": calls,
        "timing": sorted(timing_headers)
        or "not recorded: the cassettes keep no timing header "
        "(llama-cpp-python sends none, and openai-processing-ms is dropped as volatile)",
    }


def markdown(runs: list[dict[str, Any]], sizes: dict[str, Any], cassettes: dict[str, Any]) -> str:
    lines = [
        f"### (a) Story digest wall time (stub delay {DELAY_S} s per call, concurrency {CONCURRENCY} vs 1)",
        "",
        "| articles | re-asks | calls | sequential s | concurrent s | speed-up | critical path s | "
        "conc / critical | semaphore bound s | conc / bound |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label in dict.fromkeys(r["label"] for r in runs):
        seq = next(r for r in runs if r["label"] == label and r["mode"] == "sequential")
        conc = next(r for r in runs if r["label"] == label and r["mode"] == "concurrent")
        lines.append(
            f"| {conc['articles']} | {conc['reasks']} | {conc['calls']} | {seq['wall_s']:.2f} | {conc['wall_s']:.2f} | "
            f"{seq['wall_s'] / conc['wall_s']:.1f}x | {conc['critical_path_s']:.1f} | "
            f"{conc['wall_s'] / conc['critical_path_s']:.2f} | {conc['semaphore_bound_s']:.1f} | "
            f"{conc['wall_s'] / conc['semaphore_bound_s']:.2f} |"
        )
    seq_o, conc_o = overhead(runs, "sequential"), overhead(runs, "concurrent")
    pipeline = [(r["wall_s"] - r["delay_total_s"]) * 1000 / r["calls"] for r in runs if r["mode"] == "sequential"]
    lines += [
        "",
        "### (b) Per LLM call: CallUsage.latency_ms minus the injected delay, and CallUsage.queue_ms",
        "",
        "| runs | calls | latency_ms - delay: median / p95 / max ms | queue_ms: median / p95 / max |",
        "|---|---:|---|---|",
        f"| sequential (one slot, calls one after another) | {seq_o['calls']} | {seq_o['median_ms']} / "
        f"{seq_o['p95_ms']} / {seq_o['max_ms']} | {seq_o['queue_median_ms']} / {seq_o['queue_p95_ms']} / "
        f"{seq_o['queue_max_ms']} |",
        f"| concurrent ({CONCURRENCY} slots, every call of a round at once) | {conc_o['calls']} | "
        f"{conc_o['median_ms']} / {conc_o['p95_ms']} / {conc_o['max_ms']} | {conc_o['queue_median_ms']} / "
        f"{conc_o['queue_p95_ms']} / {conc_o['queue_max_ms']} |",
        "",
        f"Stub's own time beyond the delay: median {seq_o['stub_own_median_ms']} ms. Whole pipeline "
        f"(prepare, prompts, verify, digest, HTTP) in the sequential runs: "
        f"{statistics.median(pipeline):.1f} ms per call (wall minus calls x delay).",
        "",
        "### (c) Prompt size against the article (20-article story, first asks; tokens = chars / 4)",
        "",
        "| prompt | calls | article chars (median, range) | prompt chars (median) | prompt / article | "
        "fixed chars + per article char | prompt tokens (median) |",
        "|---|---:|---|---:|---:|---|---:|",
    ]
    for name, data in sizes.items():
        s = data["summary"]
        if "median_article_chars" in s:
            lines.append(
                f"| {name} | {s['calls']} | {s['median_article_chars']:.0f} ({s['article_chars_range'][0]}-"
                f"{s['article_chars_range'][1]}) | {s['median_message_chars']:.0f} | {s['median_ratio']:.2f} | "
                f"{s['fixed_chars']} + {s['chars_per_article_char']} x | {s['median_prompt_tokens']:.0f} |"
            )
        else:
            lines.append(
                f"| {name} | {s['calls']} | (facts of all articles) | {s['median_message_chars']:.0f} | - | - | "
                f"{s['median_prompt_tokens']:.0f} |"
            )
    lines += [
        "",
        f"### (d) Recorded embedded-model calls (cassettes/test_gold_stories: {len(cassettes['cassettes'])} cassettes)",
        "",
        "| prompt | calls | re-asks | prompt tokens (median / max) | completion tokens (median) | "
        "chars per prompt token | finish |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for name, p in cassettes["per_prompt"].items():
        lines.append(
            f"| {name} | {p['calls']} | {p['reasks']} | {p['median_prompt_tokens']:.0f} / {p['max_prompt_tokens']} | "
            f"{p['median_completion_tokens']:.0f} | {p['chars_per_prompt_token']} | {', '.join(p['finish_reasons'])} |"
        )
    timing = cassettes["timing"]
    lines += ["", f"Latency in cassettes: {timing if isinstance(timing, str) else ', '.join(timing)}."]
    return "\n".join(lines)


async def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    prompts = PromptRegistry.load(ROOT / "prompts").resolve()
    scenarios = [
        ("5 articles", synthetic_story(5)),
        ("20 articles", synthetic_story(20)),
        ("20 articles, 5 re-asked", synthetic_story(20, reasked=5)),
    ]
    proc, port = fake_openai.spawn("--delay", str(DELAY_S), "--reask-marker", REASK_MARKER)
    started = time.monotonic()
    runs = []
    try:
        await warm_up(port, prompts)
        for label, articles in scenarios:
            for sequential in (False, True):
                run = await measure(port, prompts, articles, sequential=sequential)
                run["label"] = label
                runs.append(run)
                print(f"  {label}, {run['mode']}: {run['wall_s']:.2f} s, {run['calls']} calls", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    twenty = next(r for r in runs if r["label"] == "20 articles" and r["mode"] == "sequential")
    sizes = prompt_sizes(twenty, scenarios[1][1])
    cassettes = cassette_tokens()
    print("  the service under load (service_load) ...", file=sys.stderr)
    load_args = service_load.parse([])
    load = await service_load.run(load_args)
    print("  the intake under a burst, SQLite and PostgreSQL (intake) ...", file=sys.stderr)
    intake_args = intake.parse([])
    bursts = await intake.run(intake_args)
    print("  one model call beside a plain AsyncOpenAI call (per_call) ...", file=sys.stderr)
    call = await per_call.run()
    table = "\n\n".join([markdown(runs, sizes, cassettes), service_load.markdown(load, load_args),
                          intake.markdown(bursts), per_call.markdown(call)])
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.run",
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "delay_s": DELAY_S,
        "concurrency": CONCURRENCY,
        "prompts": {name: p.ref for name, p in prompts.items()},
        "runs": [{k: v for k, v in r.items() if k != "stats"} for r in runs],
        "overhead": {"sequential": overhead(runs, "sequential"), "concurrent": overhead(runs, "concurrent")},
        "prompt_sizes": sizes,
        "cassettes": cassettes,
        "service": {**load, "args": vars(load_args)},
        "intake": {**bursts, "args": vars(intake_args)},
        "per_call": call,
        "markdown": table,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {RESULTS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
