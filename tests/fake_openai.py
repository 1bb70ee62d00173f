"""The fake OpenAI-compatible server of the tests and the benchmarks: a fault-injecting TEST DOUBLE.

THIS IS A TEST DOUBLE, NOT A MODEL. Every answer it gives is shaped by hand in this module, on
purpose, and it is the only place in the project where model answers are shaped by hand. It
answers ``POST /v1/chat/completions`` in one of two ways:

- **scripted faults** (tests): each request takes the next queued ``Fault``, built with the helpers
  below: the failures a real endpoint produces rarely and unpredictably (429 with Retry-After,
  spent quota, 5xx, slow answers, dropped connections, broken or cut-off JSON, refusals), or a
  hand-written answer, so that the real ``openai`` client inside ``service.llm.client`` is tested
  against real sockets instead of a mocked client. A request that finds the script empty is
  answered 503 and counted as unscripted, and the ``fault_server`` fixture then fails the test::

      def test_retries(fault_server: FaultServer) -> None:
          fault_server.script([status(500), ok('{"facts": []}')])
          ...
          assert len(fault_server.completions) == 2

- **computed answers** (``FaultServer.compute``: the scale tests; the benchmarks run it as
  ``python -m tests.fake_openai --delay 0.5``, which prints ``PORT <n>`` once listening): requests
  beyond the script are answered after a fixed delay with JSON that passes newsdigest's
  verification, computed from the request itself (``answer``): key facts are the first ``facts``
  numbered sentences ``[n] ...`` of the article, each claim the sentence's own text citing ``[n]``;
  sentiment is neutral citing sentence 1; a digest has one statement per article (its first fact,
  cited by id), up to 8. The prompt is told by the output schema the request carries. An article
  whose title line holds ``reask_marker`` is first answered with one more fact citing a sentence
  that does not exist, so the service re-asks once. Usage: characters / 4 (rounded up) for the
  messages and for the answer. ``GET /stats`` lists one row per computed answer (prompt,
  characters, tokens, server-side milliseconds, first line of the user message); ``DELETE /stats``
  clears it.

Happy-path behaviour against a real model is covered by the recorded cassettes, never by this server.
It runs on the standard library's ``ThreadingHTTPServer`` on 127.0.0.1, one thread per connection;
stopping it wakes every handler (even one sleeping in a delay), closes every socket and joins every
thread, so nothing outlives a test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.processes import free_port

__all__ = [
    "Fault",
    "FaultServer",
    "ReceivedRequest",
    "answer",
    "closed_port_url",
    "delay",
    "fault_server_fixture",
    "first_user",
    "insufficient_quota",
    "length",
    "malformed",
    "numbered_lines",
    "ok",
    "prompt_name",
    "refusal",
    "reset",
    "serve_faults",
    "spawn",
    "status",
    "tool_call",
]

HOST = "127.0.0.1"
DEFAULT_USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "cached_tokens": 0}
MALFORMED_CONTENT = '{"facts": ['
TRUNCATED_CONTENT = '{"facts": [{"claim": "The council approved the budget", "sentences": [1'
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
#: A numbered sentence of an article prompt: ``[n] text``.
NUMBERED = re.compile(r"^\[(\d+)\] (.*)$")
_ARTICLE = re.compile(r"^ARTICLE A(\d+)\b")
_FACT = re.compile(r"^(?:A\d+\.)?F(\d+): (.*)$")


# --- scripted answers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """How the server answers one request. Build these with the helpers below."""

    kind: Literal["completion", "status", "reset"]
    delay_s: float = 0.0
    # kind="completion"
    content: str | None = None
    refusal: str | None = None
    tool_arguments: str | None = None
    finish_reason: str = "stop"
    usage: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_USAGE))
    # kind="status"
    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def ok(content: str | dict[str, Any], finish_reason: str = "stop", usage: dict[str, int] | None = None) -> Fault:
    """A chat.completion whose message content is ``content`` (a dict is JSON-encoded).

    ``usage`` keys: prompt_tokens, completion_tokens, cached_tokens (total is computed).
    """
    text = content if isinstance(content, str) else json.dumps(content)
    return Fault("completion", content=text, finish_reason=finish_reason, usage={**DEFAULT_USAGE, **(usage or {})})


def status(code: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Fault:
    """An error status with an OpenAI-shaped error body unless ``body`` is given."""
    if body is None:
        body = {"error": {"message": f"fault_server: scripted {code}", "type": "server_error" if code >= 500
                          else "invalid_request_error", "param": None, "code": None}}
    return Fault("status", status=code, body=body, headers=dict(headers or {}))


def insufficient_quota() -> Fault:
    """429 as OpenAI sends it when the account's quota is spent (retrying cannot help)."""
    return status(429, body={"error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}})


def delay(seconds: float, then: Fault | None = None) -> Fault:
    """Wait ``seconds`` before answering with ``then`` (a valid empty answer by default)."""
    return replace(then or ok('{"facts": []}'), delay_s=seconds)


def reset() -> Fault:
    """Read the request, then drop the connection with a TCP RST and no answer."""
    return Fault("reset")


def malformed(usage: dict[str, int] | None = None) -> Fault:
    """A 200 whose content is JSON broken off mid-array (finish_reason=stop)."""
    return ok(MALFORMED_CONTENT, usage=usage)


def length(usage: dict[str, int] | None = None) -> Fault:
    """A 200 cut off at max_tokens: finish_reason=length and unfinished JSON."""
    return ok(TRUNCATED_CONTENT, finish_reason="length", usage=usage)


def refusal(text: str = REFUSAL_TEXT, usage: dict[str, int] | None = None) -> Fault:
    """A 200 whose message carries ``refusal`` and no content, as OpenAI's structured outputs do."""
    return Fault("completion", content=None, refusal=text, usage={**DEFAULT_USAGE, **(usage or {})})


def tool_call(args_json: str | dict[str, Any], finish_reason: str = "stop", usage: dict[str, int] | None = None
              ) -> Fault:
    """A 200 calling the requested function with ``args_json`` (content null).

    OpenAI answers a forced ``tool_choice`` with finish_reason "stop", a free choice with "tool_calls".
    """
    args = args_json if isinstance(args_json, str) else json.dumps(args_json)
    return Fault("completion", tool_arguments=args, finish_reason=finish_reason,
                 usage={**DEFAULT_USAGE, **(usage or {})})


# --- computed answers -------------------------------------------------------------------------------


def tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def prompt_name(body: dict[str, Any]) -> str:
    """The output schema a request asks for: which prompt it is (json_object, json_schema or tools mode)."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_object":
        return str((fmt.get("schema") or {}).get("title", "unknown"))
    if fmt.get("type") == "json_schema":
        return str((fmt.get("json_schema") or {}).get("name", "unknown"))
    tools = body.get("tools") or [{}]
    return str((tools[0].get("function") or {}).get("name", "unknown"))


def first_user(messages: list[dict[str, Any]]) -> str:
    return next((str(m.get("content") or "") for m in messages if m.get("role") == "user"), "")


def numbered_lines(user_message: str) -> list[tuple[int, str]]:
    """The numbered sentences an article prompt shows the model, as (number, text), in order: the
    lines of the article block (before ``TASK:``) that start with ``[n]``."""
    block = user_message.split("TASK:")[0]
    return [(int(m.group(1)), m.group(2)) for line in block.splitlines() if (m := NUMBERED.match(line))]


def answer(body: dict[str, Any], *, facts: int, reask_marker: str | None) -> dict[str, Any]:
    """A valid answer to the chat request ``body``, computed from the prompt it carries."""
    messages = body.get("messages") or []
    user = first_user(messages)
    name = prompt_name(body).lower()
    if "fact" in name:
        sentences = numbered_lines(user)
        items = [{"claim": text, "sentences": [n]} for n, text in sentences[:facts]]
        first_ask = len(messages) <= 2
        if first_ask and reask_marker and reask_marker in user.splitlines()[0]:
            items.append({"claim": sentences[0][1], "sentences": [len(sentences) + 99]})
        return {"facts": items}
    if "sentiment" in name:
        return {"overall": "neutral", "score": 0.0, "sentences": [1], "entities": []}
    if "digest" in name:
        statements: list[dict[str, Any]] = []
        article = 0
        for line in user.split("TASK:")[0].splitlines():
            if m := _ARTICLE.match(line):
                article = int(m.group(1))
            elif (
                (m := _FACT.match(line))
                and article
                and not any(s["facts"][0].startswith(f"A{article}.") for s in statements)
            ):
                statements.append({"text": m.group(2), "facts": [f"A{article}.F{m.group(1)}"]})
        statements = statements[:8]
        headline = statements[0]["text"][:200] if statements else "Digest"
        return {"headline": headline, "statements": statements, "disagreements": []}
    return {}


@dataclass(frozen=True)
class Computing:
    """How requests beyond the script are answered (``FaultServer.compute``)."""

    delay_s: float
    facts: int
    reask_marker: str | None

    def fault(self, request: dict[str, Any]) -> Fault:
        content = json.dumps(answer(request, facts=self.facts, reask_marker=self.reask_marker))
        chars = sum(len(str(m.get("content") or "")) for m in request.get("messages") or [])
        usage = {"prompt_tokens": tokens(chars), "completion_tokens": tokens(len(content)), "cached_tokens": 0}
        made = tool_call(content, usage=usage) if request.get("tools") else ok(content, usage=usage)
        return replace(made, delay_s=self.delay_s)


# --- the server -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the server saw it; header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    received_at: float = field(default_factory=time.monotonic)


class _Server(ThreadingHTTPServer):
    # Non-daemon handler threads, joined by server_close(): nothing is left running after a test.
    daemon_threads = False
    block_on_close = True
    # socketserver's default backlog of 5 drops connection attempts beyond it when 8 clients open
    # connections at once, and the kernel retries a dropped SYN only after ~1 s.
    request_queue_size = 128

    def __init__(self, port: int = 0, idle_timeout: float | None = 10) -> None:
        super().__init__((HOST, port), _Handler)
        # A backstop: an idle keep-alive connection never pins a handler thread for long in a test.
        self.idle_timeout = idle_timeout
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.queue: deque[Fault] = deque()
        self.computing: Computing | None = None
        self.requests: list[ReceivedRequest] = []
        self.stats: list[dict[str, Any]] = []
        self.unscripted = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections: set[socket.socket] = set()
        self.ids = itertools.count(1)

    def next_fault(self, request: dict[str, Any]) -> tuple[Fault | None, bool]:
        """The answer to ``request``: the next scripted one, else a computed one (flagged), else none."""
        with self.lock:
            if self.queue:
                return self.queue.popleft(), False
            return (self.computing.fault(request), True) if self.computing else (None, False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is an expected event here, not a traceback on stderr.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real endpoint: the client pools connections
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)
        # Headers and body go out as two writes; without this, Nagle's algorithm holds the body back
        # until the client's delayed ACK (~40 ms), which a benchmark would charge to the service.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self, body: Any) -> None:
        received = ReceivedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        with self.server.lock:
            self.server.requests.append(received)

    def _send_json(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (read timeout, or a worker was killed) and closed the socket
            self.close_connection = True

    def _reset(self) -> None:
        # SO_LINGER 0: closing sends RST instead of FIN, which the client sees as a reset connection.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def do_GET(self) -> None:
        self._record(None)
        if self.path == "/stats":
            with self.server.lock:
                self._send_json(200, list(self.server.stats))
        elif self.path.rstrip("/") == "/v1/models":
            model = {"id": "fault-server-model", "object": "model", "created": 0, "owned_by": "fault_server"}
            self._send_json(200, {"object": "list", "data": [model]})
        else:
            self._send_json(404, {"error": {"message": f"fault_server: no route GET {self.path}", "code": None}})

    def do_DELETE(self) -> None:
        self._record(None)
        if self.path == "/stats":
            with self.server.lock:
                self.server.stats.clear()
        self._send_json(200, {})

    def do_POST(self) -> None:
        started = time.monotonic()
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self._record(body)
        if self.path != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"fault_server: no route POST {self.path}", "code": None}})
            return
        request = body if isinstance(body, dict) else {}
        with self.server.lock:
            self.server.in_flight += 1
            self.server.max_in_flight = max(self.server.max_in_flight, self.server.in_flight)
        fault, computed = self.server.next_fault(request)
        # The test is over while we wait: drop the connection rather than keep teardown waiting.
        interrupted = bool(fault and fault.delay_s and self.server.stopping.wait(fault.delay_s))
        with self.server.lock:
            # In flight until the answer starts, so a request sent after seeing it never overlaps.
            self.server.in_flight -= 1
        if interrupted:
            self._reset()
            return
        self._answer(fault, request)
        if computed and fault is not None:
            self._note(request, fault, started)

    def _answer(self, fault: Fault | None, request: dict[str, Any]) -> None:
        if fault is None:
            with self.server.lock:
                self.server.unscripted += 1
            self._send_json(503, {"error": {"message": "fault_server: no scripted response left for this request",
                                            "type": "fault_server_unscripted", "code": None}})
        elif fault.kind == "reset":
            self._reset()
        elif fault.kind == "status":
            self._send_json(fault.status, fault.body, fault.headers)
        else:
            self._send_json(200, self._completion(fault, request))

    def _completion(self, fault: Fault, request: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": fault.content, "refusal": fault.refusal}
        if fault.tool_arguments is not None:
            tools = request.get("tools") or [{}]
            name = ((request.get("tool_choice") or {}).get("function") or tools[0].get("function") or {}).get("name")
            message["tool_calls"] = [{"id": f"call_fault{next(self.server.ids)}", "type": "function",
                                      "function": {"name": name or "unknown", "arguments": fault.tool_arguments}}]
        usage = fault.usage
        return {
            "id": f"chatcmpl-fault{next(self.server.ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": f"{request.get('model') or 'unknown'}-fault-server",
            "system_fingerprint": "fp_fault_server",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": fault.finish_reason}],
            "usage": {
                "prompt_tokens": usage["prompt_tokens"],
                "completion_tokens": usage["completion_tokens"],
                "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
                "prompt_tokens_details": {"cached_tokens": usage["cached_tokens"]},
            },
        }

    def _note(self, request: dict[str, Any], fault: Fault, started: float) -> None:
        """A row of ``GET /stats`` for a computed answer."""
        messages = request.get("messages") or []
        row = {
            "prompt": prompt_name(request),
            "messages": len(messages),
            "message_chars": sum(len(str(m.get("content") or "")) for m in messages),
            "user_chars": len(first_user(messages)),
            "prompt_tokens": fault.usage["prompt_tokens"],
            "completion_tokens": fault.usage["completion_tokens"],
            "server_ms": round((time.monotonic() - started) * 1000, 2),
            "first_line": first_user(messages).split("\n", 1)[0][:200],
        }
        with self.server.lock:
            self.server.stats.append(row)


class FaultServer:
    """What a test holds: the base URL, the script and what the server received."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self.port: int = server.server_address[1]
        self.base_url = f"http://{HOST}:{self.port}/v1"

    def script(self, faults: Iterable[Fault]) -> None:
        """Queue how the next chat-completion requests are answered, in order."""
        with self._server.lock:
            self._server.queue.extend(faults)

    def compute(self, *, delay_s: float = 0.0, facts: int = 4, reask_marker: str | None = None) -> None:
        """From now on answer every request the script does not cover with a computed valid answer,
        after ``delay_s`` seconds (see the module's docstring): nothing is unscripted any more."""
        with self._server.lock:
            self._server.computing = Computing(delay_s, facts, reask_marker)

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received, in arrival order."""
        with self._server.lock:
            return list(self._server.requests)

    @property
    def completions(self) -> list[ReceivedRequest]:
        """The chat-completion requests received: one per HTTP attempt of the client."""
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/chat/completions"]

    def count(self, prompt: str, first_line: str) -> int:
        """Chat-completion requests for ``prompt`` (its output schema's name) whose user message starts
        with ``first_line``. A request counts when it arrives, also one whose client was killed meanwhile."""
        return sum(1 for r in self.completions if isinstance(r.json, dict) and prompt_name(r.json) == prompt
                   and first_user(r.json.get("messages") or []).split("\n", 1)[0] == first_line)

    @property
    def remaining(self) -> int:
        """Scripted answers not used yet."""
        with self._server.lock:
            return len(self._server.queue)

    @property
    def max_in_flight(self) -> int:
        """The most chat-completion requests the server was answering at the same moment."""
        with self._server.lock:
            return self._server.max_in_flight

    @property
    def unscripted(self) -> int:
        """Requests that found the script empty (answered 503)."""
        with self._server.lock:
            return self._server.unscripted


@contextmanager
def serve_faults(port: int = 0, idle_timeout: float | None = 10) -> Iterator[FaultServer]:
    """Run the server on 127.0.0.1 (a free port unless ``port``) for the duration of the block."""
    server = _Server(port, idle_timeout)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="fault_server", daemon=True)
    thread.start()
    try:
        yield FaultServer(server)
    finally:
        server.stopping.set()  # wakes handlers sleeping in a delay
        server.shutdown()
        thread.join()
        with server.lock:
            open_connections = list(server.connections)
        for conn in open_connections:  # unblocks handlers waiting for a keep-alive request
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()  # joins every handler thread


@pytest.fixture(name="fault_server")
def fault_server_fixture() -> Iterator[FaultServer]:
    """A running fault server, torn down after the test; fails the test if any request found the
    script empty. Every test folder has it: tests/conftest.py lists this module in ``pytest_plugins``."""
    with serve_faults() as server:
        yield server
        unscripted = server.unscripted
    if unscripted:
        pytest.fail(f"fault_server received {unscripted} request(s) beyond its script (answered 503)")


def closed_port_url() -> str:
    """A /v1 base URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    return f"http://{HOST}:{free_port()}/v1"


# --- as a process of its own (the benchmarks) ------------------------------------------------------


def spawn(*args: str) -> tuple[subprocess.Popen[str], int]:
    """Start ``python -m tests.fake_openai`` with these arguments; return the process and its port."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.fake_openai", *args],
                            cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"the fake OpenAI server did not start: {line!r}")
    return proc, int(line.split()[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The fake OpenAI-compatible server (a test double, not a "
                                                 "model): computed valid answers after a fixed delay.")
    parser.add_argument("--delay", type=float, default=0.5, help="seconds slept before every answer")
    parser.add_argument("--facts", type=int, default=4, help="facts per key-facts answer")
    parser.add_argument("--reask-marker", default=None, help="title text that makes the first answer fail once")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    # No idle timeout: a benchmark's pooled connection may rest between its phases.
    with serve_faults(args.port, idle_timeout=None) as server:
        server.compute(delay_s=args.delay, facts=args.facts, reask_marker=args.reask_marker)
        print(f"PORT {server.port}", flush=True)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
