"""GET /healthz (the process answers), /readyz (the database and the model endpoint answer), /metrics."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from schemas import Health, Readiness
from service import metrics
from service.api.deps import RuntimeDep
from service.api.problems import problem_response, problem_responses
from service.store import jobs

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up (liveness): no dependency is checked."""
    return Health()


async def _database(runtime: RuntimeDep) -> str:
    try:
        async with runtime.sessions() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:
        return f"database does not answer ({type(exc).__name__})"
    return "ok"


async def _model_endpoint(request: Request, runtime: RuntimeDep) -> str:
    settings = runtime.settings
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    client: httpx.AsyncClient = request.app.state.http
    try:
        response = await client.get(settings.effective_base_url.rstrip("/") + "/models", headers=headers)
    except httpx.HTTPError as exc:
        return f"model endpoint does not answer ({type(exc).__name__})"
    return "ok" if response.status_code == 200 else f"model endpoint answered {response.status_code}"


@router.get("/readyz", response_model=Readiness, responses=problem_responses(503))
async def readyz(request: Request, runtime: RuntimeDep) -> Response:
    """Ready for traffic: the database answers and the model endpoint lists its models."""
    database, model = await asyncio.gather(_database(runtime), _model_endpoint(request, runtime))
    checks = {"database": database, "llm": model}
    if database == "ok" and model == "ok":
        return JSONResponse(Readiness(status="ready", checks=checks).model_dump())
    failing = "; ".join(v for v in checks.values() if v != "ok")
    return problem_response(request, 503, "not-ready", "Not ready", failing, checks=checks)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def prometheus(runtime: RuntimeDep) -> Response:
    """Prometheus exposition: HTTP requests and latency by route, model calls, tokens, jobs, queue depth."""
    async with runtime.sessions() as session:
        metrics.QUEUE_DEPTH.set(await jobs.count_queued(session=session))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
