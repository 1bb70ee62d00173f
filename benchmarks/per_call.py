"""What one model call costs the service beyond the call itself: ``python -m benchmarks.per_call``.

Side by side in one run, against ``tests/fake_openai.py`` answering at once (``--delay 0``):

- **ours**: ``service.pipeline.extract.extract_facts`` on a prepared 20-sentence article, through the
  real ``LLMClient`` (the prompt rendered, the request built, the semaphore, the retry policy, the
  call, its usage, metrics and JSON log line, the answer parsed, validated and every fact verified);
- **the client alone**: ``LLMClient.complete`` with the rendered messages (no verification), to
  split our cost between the client and the pipeline's checks;
- **plain**: ``AsyncOpenAI().chat.completions.create(**request)`` with the same request (the same
  rendered messages and response format), its answer only ``json.loads``-ed, as a script would.

Both clients are the same SDK on the same stub, with their retries off. The three calls take turns
(ours, client alone, plain, ours, ...) so that whatever else the machine does falls on all alike,
after a warm-up and, as ``newsdigest serve`` does at start-up, ``gc.freeze()``. Each call is timed
on the wall clock and by the CPU time of this thread; "our cost" is ours minus the plain call of the
same turn. Reported: p50 and p95 of each and of the differences. The CPU figures are the steadier
ones on a busy machine: the stub runs in another process, so this thread's CPU is the client's work
alone. Nothing is asserted; ``run`` is what ``benchmarks.run`` calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from schemas import ArticleIn
from service.llm.client import LLMClient
from service.logs import configure_logging
from service.pipeline.extract import extract_facts, prompt_context
from service.pipeline.text import prepare
from service.prompts import PromptRegistry
from service.settings import Settings
from tests import fake_openai

ROOT = Path(__file__).resolve().parent.parent
CALLS = 200
WARM_UP = 30

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


async def _timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    await call()
    return (time.perf_counter() - wall) * 1000, (time.thread_time() - cpu) * 1000


async def run(calls: int = CALLS) -> dict[str, Any]:
    stub, port = fake_openai.spawn("--delay", "0")
    try:
        return await _measure(port, calls)
    finally:  # whatever failed, the stub does not outlive the run
        stub.terminate()
        stub.wait(timeout=10)


async def _measure(port: int, calls: int) -> dict[str, Any]:
    base_url = f"http://127.0.0.1:{port}/v1"
    settings = Settings(llm_base_url=base_url, llm_api_key="bench", llm_model="latency-stub", llm_mode="json_object",
                        llm_max_concurrency=4, llm_timeout_s=30)
    assert settings.effective_base_url == base_url  # never the embedded model by accident
    prompt = PromptRegistry.load(ROOT / "prompts").resolve()["key_facts"]
    prepared = prepare(article(), max_chars=60_000)
    messages = prompt.messages(**prompt_context(prepared))
    ours = LLMClient(settings)
    plain = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=30)
    # The very request ours sends, built once: the plain client pays nothing for rendering or schemas.
    from service.llm.request import chat_request

    request = chat_request(prompt, messages, model=ours.model, mode=ours.mode, strict=ours.strict,
                           temperature=settings.llm_temperature)

    async def plain_call() -> None:
        answer = await plain.chat.completions.create(**request)
        json.loads(answer.choices[0].message.content or "{}")

    turns: dict[str, Callable[[], Awaitable[Any]]] = {
        "ours": lambda: extract_facts(prepared, prompt, ours),
        "client": lambda: ours.complete(prompt, messages),
        "plain": plain_call,
    }
    wall: dict[str, list[float]] = {name: [] for name in turns}
    cpu: dict[str, list[float]] = {name: [] for name in turns}
    # The service's own logging (JSON lines at info, one llm.call line per call) into nowhere: its cost
    # of rendering is ours, a terminal's is not.
    configure_logging(Settings(environment="production", log_level="info", api_keys="bench", llm_base_url=base_url))
    try:
        with open(os.devnull, "w") as nowhere, contextlib.redirect_stderr(nowhere):
            for i in range(WARM_UP + calls):
                if i == WARM_UP:
                    gc.collect()
                    gc.freeze()
                for name, call in turns.items():
                    spent_wall, spent_cpu = await _timed(call)
                    if i >= WARM_UP:
                        wall[name].append(spent_wall)
                        cpu[name].append(spent_cpu)
    finally:
        gc.unfreeze()
        await ours.close()
        await plain.close()

    def minus(a: list[float], b: list[float]) -> list[float]:
        return [x - y for x, y in zip(a, b, strict=True)]

    return {"calls": calls,
            "wall": {name: summary(values) for name, values in wall.items()},
            "cpu": {name: summary(values) for name, values in cpu.items()},
            "our_cost": {"wall": summary(minus(wall["ours"], wall["plain"])),
                         "cpu": summary(minus(cpu["ours"], cpu["plain"])),
                         "cpu_client": summary(minus(cpu["client"], cpu["plain"])),
                         "cpu_checks": summary(minus(cpu["ours"], cpu["client"]))}}


def markdown(result: dict[str, Any]) -> str:
    w, c, o = result["wall"], result["cpu"], result["our_cost"]

    def row(label: str, wall: dict[str, float] | None, cpu: dict[str, float]) -> str:
        left = f"{wall['p50_ms']:.2f} | {wall['p95_ms']:.2f}" if wall else " | "
        return f"| {label} | {left} | {cpu['p50_ms']:.2f} | {cpu['p95_ms']:.2f} |"

    return "\n".join([
        f"### Per model call: `extract_facts` beside a plain `AsyncOpenAI` call ({result['calls']} turns, "
        "stub answering at once)", "",
        "| | wall p50 ms | wall p95 ms | CPU p50 ms | CPU p95 ms |", "|---|---:|---:|---:|---:|",
        row("`extract_facts` (LLMClient + verification)", w["ours"], c["ours"]),
        row("`LLMClient.complete` alone", w["client"], c["client"]),
        row("plain `AsyncOpenAI().chat.completions.create`", w["plain"], c["plain"]),
        row("**our cost**: `extract_facts` minus plain, per turn", o["wall"], o["cpu"]),
        row("of which the client (complete minus plain)", None, o["cpu_client"]),
        row("of which the checks (extract_facts minus complete)", None, o["cpu_checks"]),
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
