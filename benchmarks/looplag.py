"""How long an event loop was held: a task that asks to sleep 1 ms and records how late it woke.

Whatever runs on the loop without awaiting (a request's own work, a long computation) delays the
wake-up: the overshoot beyond the 1 ms asked for is the lag any other request or job on the loop
would have waited at that moment. Cheap enough to leave running under load (one wake-up a
millisecond). A process descheduled by the operating system (other processes on busy cores) shows
up as lag too: read the maximum with the machine's load in mind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

TICK_S = 0.001


class LoopLag:
    """Start it on the loop to watch (``start``), read ``summary()``, ``reset()`` between phases."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def reset(self) -> None:
        self.samples = []

    async def _watch(self) -> None:
        clock = time.perf_counter
        while True:
            asked = clock()
            await asyncio.sleep(TICK_S)
            self.samples.append(max(0.0, clock() - asked - TICK_S))

    def summary(self) -> dict[str, Any]:
        """Overshoot in ms: the maximum, p99 and p50 of the wake-ups since the last reset."""
        ms = sorted(s * 1000 for s in self.samples)
        if not ms:
            return {"samples": 0, "max_ms": None, "p99_ms": None, "p50_ms": None, "over_10ms": 0}
        return {"samples": len(ms), "max_ms": round(ms[-1], 2),
                "p99_ms": round(ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))], 2),
                "p50_ms": round(ms[len(ms) // 2], 2), "over_10ms": sum(1 for m in ms if m > 10)}
