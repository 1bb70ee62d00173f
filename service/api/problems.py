"""Every error answer is an RFC 9457 problem (application/problem+json) with a stable ``type``.

One handler turns ``service.errors.NewsdigestError`` into its ``problem()``; the others cover what
FastAPI and Starlette raise themselves (validation, unknown routes, methods, size and media type)
and anything unexpected. Bodies never carry the request's values, the article text or a key:
validation errors list where and why, not what was sent. A list of errors is cut at
``MAX_LISTED_ERRORS`` (``errors_omitted`` counts the rest), so a body of 60,000 unknown keys is not
answered with megabytes, and a field name that was sent is shown shortened and escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas import Problem
from service.errors import PROBLEM_TYPE, NewsdigestError
from service.logs import log_crash

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
#: Invalid fields listed in one answer; the rest are only counted (``errors_omitted``).
MAX_LISTED_ERRORS = 50
#: A field name from the request (an unknown key) is cut to this many characters.
MAX_NAME_CHARS = 64

# Statuses Starlette raises on its own (routing, our guard middleware), with our stable types.
_HTTP_TYPES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("request-too-large", "Request too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def _name(part: Any) -> Any:
    """A location part as JSON can carry it: a sent key shortened, a lone surrogate escaped."""
    if not isinstance(part, str):
        return part
    short = part if len(part) <= MAX_NAME_CHARS else part[:MAX_NAME_CHARS] + "..."
    return short.encode("utf-8", "backslashreplace").decode("utf-8")


def listed_errors(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """``errors`` (with safe locations) cut to ``MAX_LISTED_ERRORS``, and ``errors_omitted`` when cut."""
    shown = [{**e, "loc": [_name(p) for p in e.get("loc", [])]} for e in errors[:MAX_LISTED_ERRORS]]
    omitted = len(errors) - len(shown)
    return {"errors": shown, **({"errors_omitted": omitted} if omitted else {})}


def problem_body(scope_or_request: Request | MutableMapping[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Add where and which request: the path (never the query, which may hold a key) and the request id."""
    scope = scope_or_request.scope if isinstance(scope_or_request, Request) else scope_or_request
    state = scope.get("state") or {}
    if isinstance(body.get("errors"), list):
        body = {**body, **listed_errors(body["errors"])}
    path = scope.get("path")
    instance = path.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(path, str) else None
    return {**body, "instance": instance, "request_id": state.get("request_id")}


def problem_response(request: Request | MutableMapping[str, Any], status: int, kind: str, title: str, detail: str,
                     headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"type": PROBLEM_TYPE + kind, "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(problem_body(request, body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem answers (see :func:`document_problems`)."""
    return {status: {"model": Problem} for status in statuses}


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Every 4xx/5xx in the OpenAPI document as ``application/problem+json`` with the Problem schema.

    FastAPI files ``responses=`` models under application/json and adds its own 422 model
    (HTTPValidationError), which this service never sends.
    """
    problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            for status, response in operation.get("responses", {}).items():
                if status[:1] in ("4", "5"):
                    response["content"] = {PROBLEM_JSON: problem}
    for unused in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(unused, None)
    return schema


async def _newsdigest_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NewsdigestError)
    headers = {"WWW-Authenticate": 'Bearer realm="newsdigest"'} if exc.status == 401 else None
    if exc.status >= 500:
        log.error("request.failed", problem=exc.type, status=exc.status, detail=exc.detail)
    else:
        log.info("request.rejected", problem=exc.type, status=exc.status)
    return JSONResponse(problem_body(request, exc.problem()), status_code=exc.status, media_type=PROBLEM_JSON,
                        headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    if any(e["type"] == "json_invalid" for e in errors):
        position = next(e["loc"][-1] for e in errors if e["type"] == "json_invalid")
        return problem_response(request, 400, "malformed-json", "Malformed JSON",
                                f"the request body is not valid JSON (at character {position})")
    listing = "; ".join(f"{_field([_name(p) for p in e['loc']])}: {e['msg']}" for e in errors[:10])
    detail = f"{len(errors)} invalid field{'s' if len(errors) != 1 else ''}: {listing}"
    return problem_response(request, 422, "invalid-input", "Invalid input", detail, errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind, title = _HTTP_TYPES.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route for {request.method} {request.url.path}"
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(request, exc.status_code, kind, title, detail, headers=exc.headers)


def crash_response(request: Request | MutableMapping[str, Any]) -> JSONResponse:
    return problem_response(request, 500, "internal-error", "Internal error",
                            "an unexpected error occurred; quote the request_id when reporting it")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Crashes inside the app are answered by RequestContext; this is for one in the middleware itself.
    log_crash(exc)
    return crash_response(request)


def install(app: FastAPI) -> None:
    app.add_exception_handler(NewsdigestError, _newsdigest_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
