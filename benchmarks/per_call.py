"""What one model call costs the service beyond the call itself: ``python -m benchmarks.per_call``.

Side by side in one run, against ``benchmarks/latency_stub.py`` answering at once (``--delay 0``):

- **ours**: ``service.pipeline.extract.extract_facts`` on a prepared 20-sentence article, through the
  real ``LLMClient`` (the prompt rendered, the request built, the semaphore, the retry policy, the
  call, its usage, metrics and log line, the answer parsed, validated and every fact verified);
- **plain**: ``AsyncOpenAI().chat.completions.create(**request)`` with the same request (the same
  rendered messages, the same response format), its answer only ``json.loads``-ed, as a script would.

Both clients are the same SDK on the same stub, with their retries off. The calls alternate (ours,
plain, ours, ...) so that anything else happening on the machine falls on both alike; each call is
timed on its own, and "our cost" is ours minus the plain call next to it. Reported: p50 and p95 of
each, and of the difference. Nothing is asserted; ``run`` is what ``benchmarks.run`` calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from benchmarks import latency_stub
from schemas import ArticleIn
from service.llm.client import LLMClient
from service.logs import configure_logging
from service.pipeline.extract import extract_facts, prompt_context
from service.pipeline.text import prepare
from service.prompts import PromptRegistry
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CALLS = 200
WARM_UP = 20

_SENTENCES = [
    "The Lakeside council approved {n} million euros for the harbour bridge on Tuesday.",
    "Mayor Ana Ruiz said the bridge would open in 2027 if work starts this spring.",
    "The vote was 7 to {n} after a debate that lasted three hours.",
    "Engineers from BridgeCo estimated the span at 340 metres.",
    "Opposition leader Tom Varga called the plan rushed and asked for an audit.",
]


def article() -> ArticleIn:
    body = " ".join(_SENTENCES[k % len(_SENTENCES)].format(n=k + 2) for k in range(20))
    return ArticleIn(outlet="Bench Post", title="Harbour bridge vote", body=body)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values_ms: list[float]) -> dict[str, float]:
    return {"n": len(values_ms), "p50_ms": round(statistics.median(values_ms), 3),
            "p95_ms": round(percentile(values_ms, 0.95), 3), "max_ms": round(max(values_ms), 3)}


async def run(calls: int = CALLS) -> dict[str, Any]:
    stub, port = latency_stub.spawn("--delay", "0")
    base_url = f"http://127.0.0.1:{port}/v1"
    settings = Settings(llm_base_url=base_url, llm_api_key="bench", llm_model="latency-stub", llm_mode="json_object",
                        llm_max_concurrency=4, llm_timeout_s=30)
    prompt = PromptRegistry.load(ROOT / "prompts").resolve()["key_facts"]
    prepared = prepare(article(), max_chars=60_000)
    ours = LLMClient(settings)
    plain = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=30)
    # The very request ours sends, built once: the plain client pays nothing for rendering or schemas.
    request = ours._request(prompt, prompt.messages(**prompt_context(prepared)))
    # The service's own logging (JSON lines at info: one llm.call line per call), written to nowhere, so the
    # cost of rendering is ours and the terminal's is not.
    configure_logging(Settings(environment="production", log_level="info", api_keys="bench", llm_base_url=base_url))
    ours_ms: list[float] = []
    plain_ms: list[float] = []
    facts = 0
    try:
        with open(os.devnull, "w") as nowhere, contextlib.redirect_stderr(nowhere):
            for i in range(WARM_UP + calls):
                started = time.perf_counter()
                found, _ = await extract_facts(prepared, prompt, ours)
                mid = time.perf_counter()
                answer = await plain.chat.completions.create(**request)
                json.loads(answer.choices[0].message.content or "{}")
                ended = time.perf_counter()
                if i >= WARM_UP:
                    ours_ms.append((mid - started) * 1000)
                    plain_ms.append((ended - mid) * 1000)
                    facts = len(found)
    finally:
        await ours.close()
        await plain.close()
        stub.terminate()
        stub.wait(timeout=10)
    difference = [a - b for a, b in zip(ours_ms, plain_ms, strict=True)]
    return {"calls": calls, "facts_per_answer": facts, "ours": summary(ours_ms), "plain": summary(plain_ms),
            "difference": summary(difference),
            "quantile_difference": {
                "p50_ms": round(statistics.median(ours_ms) - statistics.median(plain_ms), 3),
                "p95_ms": round(percentile(ours_ms, 0.95) - percentile(plain_ms, 0.95), 3)}}


def markdown(result: dict[str, Any]) -> str:
    o, p, d, q = result["ours"], result["plain"], result["difference"], result["quantile_difference"]
    return "\n".join([
        f"### Per model call: extract_facts against a plain AsyncOpenAI call ({result['calls']} sequential pairs, "
        f"stub at 0 s, {result['facts_per_answer']} facts per answer)", "",
        "| | p50 ms | p95 ms | max ms |", "|---|---:|---:|---:|",
        f"| `extract_facts` (LLMClient, verification) | {o['p50_ms']:.2f} | {o['p95_ms']:.2f} | {o['max_ms']:.2f} |",
        f"| plain `AsyncOpenAI().chat.completions.create` | {p['p50_ms']:.2f} | {p['p95_ms']:.2f} | {p['max_ms']:.2f} |",
        f"| our cost: each pair's difference | {d['p50_ms']:.2f} | {d['p95_ms']:.2f} | {d['max_ms']:.2f} |",
        f"| our cost: difference of the percentiles | {q['p50_ms']:.2f} | {q['p95_ms']:.2f} | |",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=CALLS)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.calls))
    print(markdown(result))
    print(json.dumps(result), file=sys.stderr)


if __name__ == "__main__":
    main()
