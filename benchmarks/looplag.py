"""How long an event loop was held: a task that asks to sleep 1 ms and records how late it woke.

Whatever runs on the loop without awaiting (a request's own work, a long computation) delays the
wake-up: the overshoot beyond the 1 ms asked for is the lag any other request or job on the loop
would have waited at that moment. Cheap enough to leave running under load (one wake-up a
millisecond).

A process the operating system took off its core (other processes on busy cores) shows up as lag
too, without having worked. So each wake-up also records the CPU time the loop's thread used
meanwhile: ``cpu_max_ms`` is the most work the loop did between two wake-ups, the part of the lag
that is the process's own. Garbage collections are timed too (``gc_max_ms``), as they hold the loop.

One turn of the loop runs every callback that was ready when it began, so with 32 requests in
flight the tick waits for several requests' steps, each short. What one request or job held the
loop for is the longest single callback (``step_max_ms``, with ``step_max_what`` naming it): every
callback is timed (``watch_steps``: a wrapper around ``asyncio.Handle._run``, about a microsecond a
callback, for benchmarks only); ``step_cpu_max_ms`` is the most CPU one callback used, which a busy
machine taking the core away cannot inflate.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any

TICK_S = 0.001


class LoopLag:
    """Start it on the loop to watch (``start``), read ``summary()``, ``reset()`` between phases."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.cpu: list[float] = []
        self.gc_pauses: list[float] = []
        self.step_max = 0.0
        self.step_max_what = ""
        self.step_cpu_max = 0.0
        self.step_cpu_max_what = ""
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None

    def watch_steps(self) -> None:
        """Time every callback the loop runs (all loops of the process: call it in a benchmark only)."""
        run = asyncio.events.Handle._run
        watcher = self

        def timed(handle: asyncio.events.Handle) -> None:
            started, used = time.perf_counter(), time.thread_time()
            run(handle)
            spent, worked = time.perf_counter() - started, time.thread_time() - used
            if spent > watcher.step_max:
                watcher.step_max, watcher.step_max_what = spent, _describe(handle)
            if worked > watcher.step_cpu_max:
                watcher.step_cpu_max, watcher.step_cpu_max_what = worked, _describe(handle)

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="loop-lag")
        gc.callbacks.append(self._gc)

    async def stop(self) -> None:
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def reset(self) -> None:
        self.samples, self.cpu, self.gc_pauses = [], [], []
        self.step_max, self.step_max_what = 0.0, ""
        self.step_cpu_max, self.step_cpu_max_what = 0.0, ""

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.append(time.perf_counter() - self._gc_started)

    async def _watch(self) -> None:
        clock, cpu = time.perf_counter, time.thread_time
        while True:
            asked, used = clock(), cpu()
            await asyncio.sleep(TICK_S)
            self.samples.append(max(0.0, clock() - asked - TICK_S))
            self.cpu.append(cpu() - used)

    def summary(self) -> dict[str, Any]:
        """Overshoot in ms: the maximum, p99 and p50 of the wake-ups since the last reset."""
        ms = sorted(s * 1000 for s in self.samples)
        gc_max = round(max(self.gc_pauses) * 1000, 2) if self.gc_pauses else 0.0
        steps = {"step_max_ms": round(self.step_max * 1000, 2), "step_max_what": self.step_max_what,
                 "step_cpu_max_ms": round(self.step_cpu_max * 1000, 2), "step_cpu_max_what": self.step_cpu_max_what}
        if not ms:
            return {"samples": 0, "max_ms": None, "p99_ms": None, "p50_ms": None, "over_10ms": 0, "cpu_max_ms": None,
                    "gc_max_ms": gc_max, "gc_runs": len(self.gc_pauses), **steps}
        return {"samples": len(ms), "max_ms": round(ms[-1], 2),
                "p99_ms": round(ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))], 2),
                "p50_ms": round(ms[len(ms) // 2], 2), "over_10ms": sum(1 for m in ms if m > 10),
                "cpu_max_ms": round(max(self.cpu) * 1000, 2), "gc_max_ms": gc_max, "gc_runs": len(self.gc_pauses),
                **steps}


def _describe(handle: asyncio.events.Handle) -> str:
    """What a callback was: a task's coroutine (where it stood), else the callback's own name."""
    callback = getattr(handle, "_callback", None)
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        code = getattr(coro, "cr_code", None)
        return f"task {getattr(code, 'co_qualname', repr(coro))}" if code else f"task {coro!r}"[:120]
    return getattr(callback, "__qualname__", repr(callback))[:120]
