"""OpenTelemetry traces: off by default, optional packages, a request's trace carried through a job's
payload to the model calls, each call a span with its usage and cost and never the article's text."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service import tracing
from service.jobs import story_jobs
from service.llm.client import LLMClient
from service.prompts import PromptRegistry
from service.settings import Settings
from service.store import db
from service.store import jobs as job_store
from tests.fake_openai import FaultServer, ok

pytestmark = pytest.mark.block_network(allowed_hosts=[r"127\.0\.0\.1$"])

PROMPT = PromptRegistry.load(Path(__file__).resolve().parents[2] / "prompts").get("key_facts")
SECRET_TEXT = "The council approved the secret budget of $4.2 million."
MESSAGES = [{"role": "user", "content": f"[1] {SECRET_TEXT}"}]
FACTS = {"facts": [{"claim": SECRET_TEXT, "sentences": [1]}]}
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure(Settings(), exporter=exporter)
    yield exporter
    tracing.shutdown()


def test_off_by_default_and_every_helper_is_a_no_op() -> None:
    assert not tracing.configure(Settings())
    assert not tracing.enabled()
    with tracing.span("nothing") as current:
        assert current is None
    assert tracing.inject({"a": 1}) == {"a": 1}
    with tracing.job_span("analyze_article", {"_trace": {"traceparent": PARENT}}) as job:
        assert job is None


def test_an_endpoint_without_the_otel_extra_leaves_tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if the extra were not installed
    assert not tracing.configure(Settings(otel_endpoint="http://127.0.0.1:4318"))
    assert not tracing.enabled()


async def test_each_model_call_is_a_client_span_with_usage_and_no_text(
    spans: InMemorySpanExporter, fault_server: FaultServer
) -> None:
    fault_server.script([ok(FACTS, usage={"prompt_tokens": 1_000, "completion_tokens": 50, "cached_tokens": 0})])
    llm = LLMClient(Settings(llm_base_url=fault_server.base_url, llm_api_key="test-key", llm_model="gpt-4o-mini",
                             llm_mode="json_schema"))
    try:
        with tracing.span("job analyze_article"):
            await llm.complete(PROMPT, MESSAGES)
    finally:
        await llm.close()
    (call, job) = spans.get_finished_spans()
    assert call.name == "chat gpt-4o-mini" and call.kind == SpanKind.CLIENT
    assert call.parent is not None and call.parent.span_id == job.context.span_id
    attributes = dict(call.attributes or {})
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attributes["gen_ai.usage.input_tokens"] == 1_000 and attributes["gen_ai.usage.output_tokens"] == 50
    assert attributes["newsdigest.prompt"] == PROMPT.ref and attributes["newsdigest.outcome"] == "ok"
    assert attributes["newsdigest.cost_usd"] == pytest.approx((1_000 * 0.15 + 50 * 0.60) / 1e6)
    assert "secret budget" not in repr(attributes) and "test-key" not in repr(attributes)


def test_a_jobs_payload_carries_the_trace_and_its_run_continues_it(spans: InMemorySpanExporter) -> None:
    with tracing.span("POST /v1/webhooks/cms", kind="server") as request:
        payload = tracing.inject({"story_id": "s1"})
    assert payload["story_id"] == "s1" and payload[tracing.TRACE_KEY]["traceparent"].startswith("00-")
    # Later, in a worker, maybe in another process: the payload is all it has.
    with tracing.job_span("refresh_story", payload, id="job-1", attempt=1):
        pass
    _, job = spans.get_finished_spans()
    assert job.name == "job refresh_story" and job.kind == SpanKind.CONSUMER
    assert job.context.trace_id == request.get_span_context().trace_id
    assert job.parent is not None and job.parent.span_id == request.get_span_context().span_id
    assert dict(job.attributes or {})["newsdigest.job.id"] == "job-1"


async def test_story_jobs_queue_their_jobs_with_the_trace(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/nd.db", llm_base_url="http://127.0.0.1:9/v1")
    engine = db.make_engine(settings.database_url)
    try:
        await db.upgrade_engine(engine)
        sessions = db.make_sessionmaker(engine)
        with tracing.span("POST /v1/webhooks/cms", kind="server") as request:
            async with sessions() as session, session.begin():
                refresh = await story_jobs.schedule_refresh(session=session, story_id="s1", settings=settings)
                callback = await story_jobs.schedule_callback(session=session, story_id="s1", digest_id="d1",
                                                              settings=settings)
        async with sessions() as session:
            stored = [await job_store.get_job(session=session, job_id=j.id) for j in (refresh, callback)]
    finally:
        await engine.dispose()
    trace_id = f"{request.get_span_context().trace_id:032x}"
    for job in stored:
        assert job is not None and trace_id in job.payload[tracing.TRACE_KEY]["traceparent"]


async def test_requests_are_server_spans_named_by_route_continuing_the_callers_trace(
    spans: InMemorySpanExporter,
) -> None:
    app = FastAPI()

    @app.get("/v1/articles/{article_id}")
    async def read(article_id: str) -> dict[str, Any]:
        with tracing.span("inside"):
            return {"id": article_id}

    tracing.instrument_app(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get("/v1/articles/a1?api_key=sekret", headers={"traceparent": PARENT})
    assert response.status_code == 200
    inside, server = spans.get_finished_spans()
    assert server.name == "GET /v1/articles/{article_id}" and server.kind == SpanKind.SERVER
    assert f"{server.context.trace_id:032x}" == PARENT.split("-")[1]
    assert inside.parent is not None and inside.parent.span_id == server.context.span_id
    attributes = dict(server.attributes or {})
    assert attributes["http.response.status_code"] == 200 and attributes["http.route"] == "/v1/articles/{article_id}"
    assert "sekret" not in repr(attributes) and "a1" not in server.name


def test_log_lines_carry_the_trace_ids_while_tracing(spans: InMemorySpanExporter) -> None:
    assert tracing.add_trace_ids(None, "info", {"event": "outside"}) == {"event": "outside"}
    with tracing.span("work") as current:
        event = tracing.add_trace_ids(None, "info", {"event": "inside"})
    context = current.get_span_context()
    assert event == {"event": "inside", "trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
    tracing.shutdown()
    with tracing.span("off"):
        assert tracing.add_trace_ids(None, "info", {"event": "off"}) == {"event": "off"}
