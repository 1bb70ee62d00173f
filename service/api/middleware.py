"""Two plain ASGI middlewares around every request.

``RequestContext`` gives each request an id (a sane incoming X-Request-ID, else a new one), binds it
to the structlog context, echoes it back, counts the request under its route template (never the
raw path: ids in paths would make a metric series per article) and logs one line without the query
string, where a browser's API key may sit. ``RequestGuard`` refuses bodies over the size limit, by
Content-Length and again while streaming, and bodies that are not JSON, before any route reads them.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from fastapi.routing import APIRoute
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.api.problems import problem_response

log = structlog.get_logger("service.api.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


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

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                route = route_template(scope)
                method = scope["method"]
                metrics.HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
                metrics.HTTP_LATENCY.labels(method=method, route=route).observe(elapsed)
                log.info("http.request", method=method, route=route, path=scope["path"], status=status,
                         duration_ms=round(elapsed * 1000, 1))


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
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
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
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the route's body read, so the problem handlers answer it.
                    raise HTTPException(413, detail=too_large)
            return message

        await self.app(scope, limited_receive, send)
