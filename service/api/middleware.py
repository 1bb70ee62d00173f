"""Two plain ASGI middlewares around every request.

``RequestContext`` gives each request an id (a sane incoming X-Request-ID, else a new one), binds it
to the structlog context, echoes it back, counts the request under its route template (never the
raw path: ids in paths would make a metric series per article) and logs one line without the query
string, where a browser's API key may sit. It also answers a crash itself (500 problem+json) and logs
it as one ``request.crashed`` line with the request id, the exception types and where they were
raised, but no exception message or traceback text: those carry SQL parameters and request values
(article text, ids). Nothing is re-raised to the server, which would log the whole traceback again.

``RequestGuard`` refuses, before any route reads the body: an unreadable Content-Length (400), a
body over the size limit (413, by Content-Length and again while reading), a body that is not JSON
(415) and JSON nested deeper than ``MAX_JSON_DEPTH`` (422), which would exhaust the parser's
recursion (a RecursionError, so a 500) long before any model could use it. The body is read whole
(it is at most the size limit) and handed on unchanged, so a webhook signature still covers its bytes.
"""

from __future__ import annotations

import re
import time
import uuid
from itertools import accumulate

import structlog
from fastapi.routing import APIRoute
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.api.problems import crash_response, problem_response
from service.logs import log_crash

log = structlog.get_logger("service.api.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Deepest JSON nesting read: articles and events are 3 levels deep; the parser's own limit is near 1,000.
MAX_JSON_DEPTH = 32
# A JSON string, escapes included ("unrolled" so that it runs in linear time), and every byte but brackets.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def operation_id(route: APIRoute) -> str:
    """``{tag}-{name}``: the OpenAPI operation id of a route."""
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def route_template(scope: Scope) -> str:
    """The matched route's full path template (``/v1/articles/{article_id}``), or ``unmatched``.

    A route included through a prefixed router knows only its own part of the path, so the app
    keeps the full templates by operation id (``app.state.route_templates``, from its OpenAPI)
    and its paths without parameters (``app.state.fixed_paths``).
    """
    route = scope.get("route")
    state = scope["app"].state
    if isinstance(route, APIRoute):
        templates: dict[str, str] = getattr(state, "route_templates", {})
        return templates.get(operation_id(route), route.path)
    # Refused before routing (413, 415) or served by Starlette itself (/docs): only known paths count,
    # so made-up URLs cannot each open a metric series.
    path: str = scope["path"]
    return path if path in getattr(state, "fixed_paths", ()) else "unmatched"


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        responded = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                log_crash(exc)
                if not responded:
                    await crash_response(scope)(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                route = route_template(scope)
                method = scope["method"]
                metrics.HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
                metrics.HTTP_LATENCY.labels(method=method, route=route).observe(elapsed)
                log.info("http.request", method=method, route=route, path=scope["path"], status=status,
                         duration_ms=round(elapsed * 1000, 1))


def json_depth(body: bytes) -> int:
    """How deep ``body``'s arrays and objects nest, counted without parsing (strings skipped)."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(accumulate(_DEPTH_STEP[b] for b in brackets), default=0)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class RequestGuard:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        too_large = f"the request body is over the limit of {self.max_bytes} bytes"
        if length is not None and not length.isdigit():
            # uvicorn's parser refuses such a request before the app sees it; other servers may not.
            response = problem_response(scope, 400, "bad-request", "Bad request",
                                        "the Content-Length header is not a number of bytes")
            await response(scope, receive, send)
            return
        if length is not None and int(length) > self.max_bytes:
            response = problem_response(scope, 413, "request-too-large", "Request too large", too_large,
                                        limit=self.max_bytes)
            await response(scope, receive, send)
            return
        has_body = (length is not None and int(length) > 0) or "transfer-encoding" in headers
        if has_body and not _is_json(headers.get("content-type", "")):
            response = problem_response(scope, 415, "unsupported-media-type", "Unsupported media type",
                                        "send the request body as JSON with Content-Type: application/json")
            await response(scope, receive, send)
            return
        if not has_body:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                response = problem_response(scope, 413, "request-too-large", "Request too large", too_large,
                                            limit=self.max_bytes)
                await response(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if json_depth(body) > MAX_JSON_DEPTH:
            response = problem_response(scope, 422, "json-too-deep", "JSON nested too deeply",
                                        f"the request body nests arrays and objects more than {MAX_JSON_DEPTH} "
                                        "levels deep", limit=MAX_JSON_DEPTH)
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
