"""A fault-injecting OpenAI-compatible server for the LLM client's failure-path tests.

THIS IS A TEST DOUBLE, NOT A MODEL. Every answer it gives is written by hand, on purpose: its
job is to produce the failures a real endpoint produces rarely and unpredictably (429 with
Retry-After, spent quota, 5xx, slow answers, dropped connections, broken or cut-off JSON,
refusals) so that the real ``openai`` client in ``service.llm.client`` can be tested against real
sockets instead of a mocked client. Happy-path behaviour against a real model is covered by the
recorded cassettes, never by this server.

Each request to ``POST /v1/chat/completions`` takes the next queued ``Fault``; an empty queue
answers 503 and counts the request as unscripted, and the ``fault_server`` fixture fails the test
at teardown when that happened, so a test that calls more often than it planned fails loudly::

    def test_retries(fault_server: FaultServer) -> None:
        fault_server.script([status(500), ok('{"facts": []}')])
        ...
        assert len(fault_server.completions) == 2

It runs on the standard library's ``ThreadingHTTPServer`` on 127.0.0.1 (port 0), one thread per
connection; teardown stops every handler thread (even one sleeping in ``delay``) and closes
every socket, so nothing outlives the test.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pytest

__all__ = [
    "Fault",
    "FaultServer",
    "ReceivedRequest",
    "closed_port_url",
    "delay",
    "fault_server_fixture",
    "insufficient_quota",
    "length",
    "malformed",
    "ok",
    "refusal",
    "reset",
    "serve_faults",
    "status",
    "tool_call",
]

HOST = "127.0.0.1"
DEFAULT_USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "cached_tokens": 0}
MALFORMED_CONTENT = '{"facts": ['
TRUNCATED_CONTENT = '{"facts": [{"claim": "The council approved the budget", "sentences": [1'
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."


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

    def __init__(self) -> None:
        super().__init__((HOST, 0), _Handler)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.queue: deque[Fault] = deque()
        self.requests: list[ReceivedRequest] = []
        self.unscripted = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections: set[socket.socket] = set()
        self.ids = itertools.count(1)

    def next_fault(self) -> Fault | None:
        with self.lock:
            return self.queue.popleft() if self.queue else None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is an expected event here, not a traceback on stderr.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real endpoint: the client pools connections
    timeout = 10  # backstop: an idle keep-alive connection never pins a handler thread for long
    server: _Server

    def setup(self) -> None:
        super().setup()
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
        except OSError:  # the client gave up (read timeout) and closed the socket
            self.close_connection = True

    def _reset(self) -> None:
        # SO_LINGER 0: closing sends RST instead of FIN, which the client sees as a reset connection.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def do_GET(self) -> None:
        self._record(None)
        if self.path.rstrip("/") == "/v1/models":
            model = {"id": "fault-server-model", "object": "model", "created": 0, "owned_by": "fault_server"}
            self._send_json(200, {"object": "list", "data": [model]})
        else:
            self._send_json(404, {"error": {"message": f"fault_server: no route GET {self.path}", "code": None}})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self._record(body)
        if self.path != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"fault_server: no route POST {self.path}", "code": None}})
            return
        with self.server.lock:
            self.server.in_flight += 1
            self.server.max_in_flight = max(self.server.max_in_flight, self.server.in_flight)
        fault = self.server.next_fault()
        # The test is over while we wait: drop the connection rather than keep teardown waiting.
        interrupted = bool(fault and fault.delay_s and self.server.stopping.wait(fault.delay_s))
        with self.server.lock:
            # In flight until the answer starts, so a request sent after seeing it never overlaps.
            self.server.in_flight -= 1
        if interrupted:
            self._reset()
        else:
            self._answer(fault, body if isinstance(body, dict) else {})

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

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received, in arrival order."""
        with self._server.lock:
            return list(self._server.requests)

    @property
    def completions(self) -> list[ReceivedRequest]:
        """The chat-completion requests received: one per HTTP attempt of the client."""
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/chat/completions"]

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
def serve_faults() -> Iterator[FaultServer]:
    """Run a fault server on a free 127.0.0.1 port for the duration of the block."""
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="fault_server", daemon=True)
    thread.start()
    try:
        yield FaultServer(server)
    finally:
        server.stopping.set()  # wakes handlers sleeping in delay()
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
    """The ``fault_server`` fixture: a running fault server, torn down after the test.

    Fails the test if any request found the script empty. A test module gets the fixture by
    importing ``fault_server_fixture`` (or a conftest can list this module in ``pytest_plugins``).
    """
    with serve_faults() as server:
        yield server
        unscripted = server.unscripted
    if unscripted:
        pytest.fail(f"fault_server received {unscripted} request(s) beyond its script (answered 503)")


def closed_port_url() -> str:
    """A /v1 base URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    return f"http://{HOST}:{port}/v1"
