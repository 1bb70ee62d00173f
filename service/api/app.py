"""The HTTP service: ``create_app(settings)`` builds it; nothing is created at import time.

The lifespan opens the runtime (database engine, refusing an unmigrated database unless
``migrate_on_start``; prompt registry; model client unless one is injected; job queue) and,
unless ``run_worker`` is off, the in-process worker. Routers: one per topic under /v1, plus the
health endpoints at the root. Every error is answered as problem+json (``service.api.problems``).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import httpx
import structlog
from fastapi import APIRouter, Depends, FastAPI
from pydantic import TypeAdapter
from starlette.routing import Route

from schemas.article import NO_NUL_PATTERN
from schemas.webhooks import CmsEvent
from service import tracing
from service.api import problems
from service.api.deps import storable_path
from service.api.middleware import RequestContext, RequestGuard, operation_id
from service.api.routes import articles, digests, health, jobs, prompts, stories, webhooks
from service.jobs.runtime import open_runtime, running_worker
from service.llm.port import Completer
from service.settings import Settings

log = structlog.get_logger(__name__)

DESCRIPTION = """\
Verified facts, sentiment and one cited digest per story, for the newsroom CMS.

**Auth**: `Authorization: Bearer <key>` (one of `NEWSDIGEST_API_KEYS`) on every /v1 route, except
`POST /v1/webhooks/cms`, which is authenticated by its Standard Webhooks signature.
**Work is asynchronous**: POSTs answer 202 with a job (poll `GET /v1/jobs/{id}`, or add `?wait=S`).
**Retries are safe**: send an `Idempotency-Key` header with POSTs.
**Errors** are RFC 9457 `application/problem+json`; branch on `type`. A 422 lists at most 50 fields
(`errors_omitted` counts the rest).
**Input limits**, the same on every database: no NUL character (U+0000) or lone surrogate in any text
or path id; `published_at` written in the years 1900 to 9998; JSON nested at most 32 levels deep.
"""


def _route_templates(app: FastAPI) -> dict[str, str]:
    return {operation["operationId"]: path for path, item in app.openapi()["paths"].items()
            for operation in item.values() if isinstance(operation, dict) and "operationId" in operation}


def document_contract(schema: dict[str, Any]) -> dict[str, Any]:
    """What FastAPI cannot infer: the NUL rule on every path id (``deps.storable_path``) and the CMS
    event the webhook route reads from its raw body (it must verify the bytes before parsing them)."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("in") == "path" and parameter.get("schema", {}).get("type") == "string":
                    parameter["schema"]["pattern"] = NO_NUL_PATTERN
                # An optional header is absent or a string: HTTP has no null (FastAPI writes anyOf [..., null]).
                options = parameter.get("schema", {}).get("anyOf", [])
                if parameter.get("in") == "header" and {"type": "null"} in options and len(options) == 2:
                    rest = parameter["schema"]
                    del rest["anyOf"]
                    rest.update(next(o for o in options if o != {"type": "null"}))
    event = TypeAdapter(CmsEvent).json_schema(ref_template="#/components/schemas/{model}", mode="validation")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(event.pop("$defs", {}))
    components["CmsEvent"] = event
    return schema


def _version() -> str:
    try:
        return version("newsdigest")
    except PackageNotFoundError:
        return "0+unknown"


def create_app(settings: Settings, *, llm: Completer | None = None) -> FastAPI:
    """The API for ``settings``; ``llm`` replaces the model client (tests, benchmarks)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.api_keys:
            log.warning("auth.disabled", reason="no NEWSDIGEST_API_KEYS set: every /v1 route is open")
        async with open_runtime(settings, llm=llm) as runtime, AsyncExitStack() as stack:
            app.state.runtime = runtime
            app.state.http = await stack.enter_async_context(httpx.AsyncClient(timeout=settings.readiness_timeout_s))
            if settings.run_worker:
                await stack.enter_async_context(running_worker(runtime))
            log.info("api.started", model=runtime.llm.model, mode=runtime.llm.mode, worker=settings.run_worker,
                     database=runtime.engine.url.get_backend_name())
            if not gc.get_freeze_count():
                # What start-up loaded (modules, schemas, the app) lives as long as the process: left to the
                # collector, every full collection scans it again and holds the event loop ~100 ms on 2 cores.
                # Once per process, so an app built again (tests) does not pin its predecessors' garbage.
                gc.freeze()
            yield
        log.info("api.stopped")

    app = FastAPI(title="newsdigest", version=_version(), description=DESCRIPTION, lifespan=lifespan,
                  generate_unique_id_function=operation_id)
    app.state.settings = settings
    problems.install(app)
    # Added last runs first: the request id exists before the guard can refuse a body.
    app.add_middleware(RequestGuard, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestContext)
    # Outermost: a request's span (when tracing is on) covers everything, and the jobs it queues join it.
    tracing.instrument_app(app)
    # Every /v1 path id passes the text rule bodies pass (schemas.article.Text): one rule, one answer.
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(storable_path)])
    for topic in (articles, digests, stories, jobs, webhooks, prompts):
        v1.include_router(topic.router)
    app.include_router(v1)
    app.include_router(health.router)
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_contract(problems.document_problems(default_openapi()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to amend the schema
    app.state.route_templates = _route_templates(app)
    app.state.fixed_paths = {path for path in app.openapi()["paths"] if "{" not in path} | {
        route.path for route in app.routes if isinstance(route, Route)}
    return app
