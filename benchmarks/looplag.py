"""How long an event loop was held: a task that asks to sleep 1 ms and records how late it woke.

Whatever runs on the loop without awaiting (a request's own work, a long computation) delays the
wake-up: the overshoot beyond the 1 ms asked for is the lag any other request or job on the loop
would have waited at that moment. Cheap enough to leave running under load (one wake-up a
millisecond).

A process the operating system took off its core (other processes on busy cores) shows up as lag
too, without having worked. So each wake-up also records the CPU time the loop's thread used
meanwhile: ``cpu_max_ms`` is the most work the loop did between two wake-ups, the part of the lag
that is the process's own. Garbage collections are timed too (``gc_max_ms``), as they hold the loop.
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
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None

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
        if not ms:
            return {"samples": 0, "max_ms": None, "p99_ms": None, "p50_ms": None, "over_10ms": 0, "cpu_max_ms": None,
                    "gc_max_ms": gc_max, "gc_runs": len(self.gc_pauses)}
        return {"samples": len(ms), "max_ms": round(ms[-1], 2),
                "p99_ms": round(ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))], 2),
                "p50_ms": round(ms[len(ms) // 2], 2), "over_10ms": sum(1 for m in ms if m > 10),
                "cpu_max_ms": round(max(self.cpu) * 1000, 2), "gc_max_ms": gc_max, "gc_runs": len(self.gc_pauses)}
