"""What every job function gets besides its payload, and who holds the locks while jobs run.

A job function sees only a :class:`JobContext`: the same handful of objects whichever backend runs
it (the database worker, or the procrastinate engine worker, which builds its own in its process).

A :class:`LockHolder` names the process that takes a lock: a running job's row, an in-flight
Idempotency-Key. ``owner`` stays the same when the process restarts, ``run`` does not, so a
process coming back after a crash can tell the locks its dead predecessor left behind (it takes
them back at once, ``service.jobs.runtime``) from those of a live process (they wait for the timeouts).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.llm.port import Completer
from service.prompts import PromptRegistry
from service.settings import Settings

Payload = dict[str, Any]
#: A job's outcome: the ids it produced, shown as ``result`` by ``GET /v1/jobs/{id}``.
Result = dict[str, Any]


@dataclass(frozen=True)
class JobContext:
    sessions: async_sessionmaker[AsyncSession]
    llm: Completer
    registry: PromptRegistry
    settings: Settings


Task = Callable[[JobContext, Payload], Awaitable[Result]]

# One run per process, whatever number of runtimes it opens (tests open many): they must never
# take each other's locks for a dead predecessor's. Keyed by pid, so a forked child is a run of its own.
_RUNS: dict[int, str] = {}


def this_run() -> str:
    """This process's start: ``<pid>.<random>``, the pid first so a successor can check it is gone."""
    pid = os.getpid()
    return _RUNS.setdefault(pid, f"{pid}.{secrets.token_hex(6)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: ``owner`` is ``<host>/<NEWSDIGEST_WORKER_NAME>``, ``run`` this start of it."""

    owner: str
    run: str

    @classmethod
    def of_process(cls, settings: Settings) -> LockHolder:
        # The host is part of the owner because a successor checks its predecessor's pid on this host.
        return cls(owner=f"{socket.gethostname()[:150]}/{settings.worker_name}", run=this_run())

    def outlived(self, run: str) -> bool:
        """Whether ``run``, a run of our ``owner``, is over, so what it holds can be taken back now.

        Not our own run; one whose pid is ours now (a restarted container: the old process had it);
        one whose pid no process has. A live pid keeps its locks, because it may be another process
        of the same name on this host (an API and a worker), or a pid reused since: only the
        timeouts free those.
        """
        if run == self.run:
            return False
        head = run.split(".", 1)[0]
        if not head.isdigit() or int(head) <= 0:
            return False  # not written by this_run: leave it to the timeouts
        pid = int(head)
        try:
            return pid == os.getpid() or not _pid_alive(pid)
        except OverflowError:  # no such pid can exist
            return True
