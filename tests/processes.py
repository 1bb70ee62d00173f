"""Real processes and ports for the tests that need them: ``newsdigest serve`` until it answers, a free port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

#: The console script of the virtualenv the tests run in.
NEWSDIGEST = Path(sys.executable).with_name("newsdigest")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (free when this returns)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(env: dict[str, str], port: int, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``newsdigest serve --port <port> <args>``, once it answers ``/healthz`` (its output appended to
    ``log``, shown when it does not start); stopped at the end unless it was stopped already."""
    with log.open("ab") as out:
        process = subprocess.Popen([str(NEWSDIGEST), "serve", *args, "--port", str(port)], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, f"serve exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"serve did not start:\n{log.read_text()}"
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
