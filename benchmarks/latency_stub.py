"""A latency-injecting OpenAI-compatible stub for benchmarks: a fixed delay per call, valid answers.

NOT A MODEL. It answers ``POST /v1/chat/completions`` after sleeping ``--delay`` seconds with JSON
that passes newsdigest's verification, computed from the request itself:

- key facts: the first ``--facts`` numbered sentences ``[n] ...`` of the article, each claim being the
  sentence's own text citing ``[n]``;
- sentiment: neutral, citing sentence 1;
- digest: one statement per article (its first fact, cited by id), up to 8.

The prompt is recognised by the output schema the request carries (``response_format.schema.title``
in json_object mode, ``json_schema.name`` in json_schema mode, the function name in tools mode).
An article whose title line contains ``--reask-marker`` is first answered with one fact citing a
sentence that does not exist, so the service re-asks once (a second round for that article).

Usage reported per call: ``prompt_tokens`` = characters of all messages / 4 (rounded up), and
``completion_tokens`` likewise for the answer. ``GET /stats`` returns one row per request served
(prompt, characters, tokens, server-side milliseconds, first line of the user message).

Run: ``python -m benchmarks.latency_stub --delay 0.5`` prints ``PORT <n>`` once listening on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
_SENTENCE = re.compile(r"^\[(\d+)\] (.*)$")
_ARTICLE = re.compile(r"^ARTICLE A(\d+)\b")
_FACT = re.compile(r"^(?:A\d+\.)?F(\d+): (.*)$")


def tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def prompt_name(body: dict[str, Any]) -> str:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_object":
        return str((fmt.get("schema") or {}).get("title", "unknown"))
    if fmt.get("type") == "json_schema":
        return str((fmt.get("json_schema") or {}).get("name", "unknown"))
    tools = body.get("tools") or [{}]
    return str((tools[0].get("function") or {}).get("name", "unknown"))


def first_user(messages: list[dict[str, Any]]) -> str:
    return next((str(m.get("content") or "") for m in messages if m.get("role") == "user"), "")


def answer(body: dict[str, Any], *, facts: int, reask_marker: str | None) -> dict[str, Any]:
    messages = body.get("messages") or []
    user = first_user(messages)
    name = prompt_name(body).lower()
    if "fact" in name:
        block = user.split("TASK:")[0]
        sentences = [(int(m.group(1)), m.group(2)) for line in block.splitlines() if (m := _SENTENCE.match(line))]
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


class StubServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops connection attempts beyond it when 8 clients open
    # connections at once, and the kernel retries a dropped SYN only after ~1 s.
    request_queue_size = 128

    def __init__(self, *, delay: float, facts: int, reask_marker: str | None, port: int = 0) -> None:
        super().__init__((HOST, port), _Handler)
        self.delay = delay
        self.facts = facts
        self.reask_marker = reask_marker
        self.lock = threading.Lock()
        self.stats: list[dict[str, Any]] = []
        self.ids = itertools.count(1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StubServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as two writes; without this, Nagle's algorithm holds the body back
        # until the client's delayed ACK (~40 ms), which would be charged to the service.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/stats":
            with self.server.lock:
                self._send(200, list(self.server.stats))
        elif self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "latency-stub", "object": "model", "owned_by": "stub"}]})
        else:
            self._send(404, {"error": {"message": f"no route GET {self.path}"}})

    def do_DELETE(self) -> None:
        if self.path == "/stats":
            with self.server.lock:
                self.server.stats.clear()
        self._send(200, {})

    def do_POST(self) -> None:
        started = time.monotonic()
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route POST {self.path}"}})
            return
        body = json.loads(raw)
        time.sleep(self.server.delay)
        data = answer(body, facts=self.server.facts, reask_marker=self.server.reask_marker)
        content = json.dumps(data)
        messages = body.get("messages") or []
        chars = sum(len(str(m.get("content") or "")) for m in messages)
        usage = {"prompt_tokens": tokens(chars), "completion_tokens": tokens(len(content))}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if body.get("tools"):
            name = prompt_name(body)
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{next(self.server.ids)}",
                        "type": "function",
                        "function": {"name": name, "arguments": content},
                    }
                ],
            }
        self._send(
            200,
            {
                "id": f"chatcmpl-stub{next(self.server.ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "latency-stub",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            },
        )
        with self.server.lock:
            self.server.stats.append(
                {
                    "prompt": prompt_name(body),
                    "messages": len(messages),
                    "message_chars": chars,
                    "user_chars": len(first_user(messages)),
                    "prompt_tokens": usage["prompt_tokens"],
                    "completion_tokens": usage["completion_tokens"],
                    "server_ms": round((time.monotonic() - started) * 1000, 2),
                    "first_line": first_user(messages).split("\n", 1)[0][:200],
                }
            )


def spawn(*args: str) -> tuple[subprocess.Popen[str], int]:
    """Start the stub in a subprocess with these command-line arguments; return it and its port."""
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.latency_stub", *args],
                            cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"latency stub did not start: {line!r}")
    return proc, int(line.split()[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--delay", type=float, default=0.5, help="seconds slept before every answer")
    parser.add_argument("--facts", type=int, default=4, help="facts per key-facts answer")
    parser.add_argument("--reask-marker", default=None, help="title text that makes the first answer fail once")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = StubServer(delay=args.delay, facts=args.facts, reask_marker=args.reask_marker, port=args.port)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
