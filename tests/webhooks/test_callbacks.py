"""digest.updated reaches the CMS signed; a failing CMS is retried over a day on a jittered schedule, its
Retry-After honoured, never again after a 410, and every attempt shows in GET /v1/jobs/{id}."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from schemas.webhooks import DigestUpdated, DigestUpdatedData
from service import callbacks
from service.settings import Settings
from tests.factories import analysis, article, digest_answer
from tests.fake_openai import FaultServer, closed_port_url
from tests.running_app import API_KEY, Hooks, open_hooks
from tests.signing import CALLBACK_SECRET, verify

STORY = "council-budget"


@dataclass
class CmsStub:
    """A CMS endpoint on 127.0.0.1 that answers from a script and checks every signature itself."""

    answers: list[int]
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    #: Headers sent with every non-2xx answer (Retry-After).
    error_headers: dict[str, str] = field(default_factory=dict)

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        status = self.answers.pop(0) if self.answers else 200
        self.received.append({"headers": headers, "body": json.loads(body), "valid": verify(CALLBACK_SECRET, headers,
                                                                                            body), "status": status})
        return status


@pytest.fixture
def cms() -> Iterator[CmsStub]:
    stub = CmsStub(answers=[500, 500, 200])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = stub.handle({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            for name, value in (stub.error_headers if status >= 300 else {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    stub.url = f"http://127.0.0.1:{server.server_address[1]}/cms/hooks"
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


#: The schedule shrunk to nothing, so a test sees every retry at once.
NO_WAITS: dict[str, Any] = {"callback_retry_schedule_s": [0], "callback_retry_jitter": 0}


@pytest.fixture
async def hooks(sqlite_url: str, hook_settings: Callable[..., Settings], fault_server: FaultServer,
                cms: CmsStub) -> AsyncIterator[Hooks]:
    settings = hook_settings(sqlite_url, callback_url=cms.url, callback_secret=CALLBACK_SECRET, **NO_WAITS)
    async for running in open_hooks(settings, fault_server):
        yield running


async def test_callback_is_retried_until_the_cms_takes_it(hooks: Hooks, cms: CmsStub) -> None:
    payload = article(1)
    hooks.faults.script([*analysis(payload), digest_answer([payload])])
    await hooks.send("article.published", payload, msg_id="msg_cb")
    (refresh,) = await hooks.settle("refresh_story")
    (callback,) = await hooks.settle("send_callback")
    assert refresh.result is not None and refresh.result["callback_job_id"] == callback.id

    assert callback.status == "succeeded" and callback.attempts == 3, callback
    assert [r["status"] for r in cms.received] == [500, 500, 200]
    assert all(r["valid"] for r in cms.received)
    accepted = [r for r in cms.received if r["status"] == 200]
    assert len(accepted) == 1
    # One event, three attempts: same id (the CMS can deduplicate), each attempt signed afresh.
    assert len({r["headers"]["webhook-id"] for r in cms.received}) == 1
    assert accepted[0]["headers"]["webhook-id"].startswith("msg_")
    digest_id = refresh.result["digest_id"]
    assert accepted[0]["body"]["type"] == "digest.updated"
    assert accepted[0]["body"]["data"] == {"story_id": STORY, "digest_id": digest_id,
                                           "headline": accepted[0]["body"]["data"]["headline"],
                                           "url": f"/v1/digests/{digest_id}"}

    view = (await hooks.client.get(f"/v1/jobs/{callback.id}", headers={"authorization": f"Bearer {API_KEY}"})).json()
    assert view["status"] == "succeeded" and view["attempts"] == 3 and view["error"] is None


async def test_unreachable_cms_fails_the_job_after_its_attempts(sqlite_url: str, hook_settings: Callable[..., Settings],
                                                                fault_server: FaultServer) -> None:
    settings = hook_settings(sqlite_url, callback_url=closed_port_url(), callback_secret=CALLBACK_SECRET,
                             callback_max_attempts=2, **NO_WAITS)
    async for hooks in open_hooks(settings, fault_server):
        payload = article(1)
        hooks.faults.script([*analysis(payload), digest_answer([payload])])
        await hooks.send("article.published", payload, msg_id="msg_down")
        (refresh,) = await hooks.settle("refresh_story")
        (callback,) = await hooks.settle("send_callback")
        assert refresh.status == "succeeded"  # the digest is published whatever the CMS does
        assert callback.status == "failed" and callback.attempts == 2
        assert callback.error is not None and callback.error.startswith("DeliveryFailed: could not deliver")


# --- the schedule: over a day, jittered, Retry-After honoured -----------------------------------------------


def test_the_default_schedule_retries_for_more_than_a_day() -> None:
    settings = Settings()
    still = settings.model_copy(update={"callback_retry_jitter": 0.0})
    waits = [callbacks.retry_wait(n, still).total_seconds() for n in range(1, settings.callback_max_attempts)]
    assert waits == [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]
    assert callbacks.retry_window(settings) >= timedelta(days=1)
    assert callbacks.retry_wait(20, still) == timedelta(seconds=36_000)  # the last step repeats


def test_each_wait_is_jittered_within_its_bounds() -> None:
    settings = Settings(callback_retry_jitter=0.2)
    rng = random.Random(7)
    waits = [callbacks.retry_wait(3, settings, rng=rng).total_seconds() for _ in range(200)]
    assert all(1_440 <= w <= 2_160 for w in waits)
    assert len(set(waits)) > 100  # not the same instant for every queued event


def test_retry_after_is_honoured_when_longer_and_capped() -> None:
    settings = Settings(callback_retry_jitter=0, callback_retry_after_max_s=3_600)
    assert callbacks.retry_wait(1, settings, retry_after=120).total_seconds() == 120  # longer than 5 s: honoured
    assert callbacks.retry_wait(4, settings, retry_after=120).total_seconds() == 7_200  # the schedule is longer
    assert callbacks.retry_wait(1, settings, retry_after=10 ** 9).total_seconds() == 3_600  # capped


@pytest.mark.parametrize(("header", "seconds"), [
    ("120", 120.0), ("0", 0.0), ("-5", 0.0), ("soon", None), (None, None), ("nan", None),
])
def test_retry_after_header_values(header: str | None, seconds: float | None) -> None:
    assert callbacks.retry_after_seconds(header) == seconds


def test_retry_after_as_an_http_date() -> None:
    now = time.time()
    assert callbacks.retry_after_seconds(formatdate(now + 600, usegmt=True), now=now) == pytest.approx(600, abs=1)


def _event() -> DigestUpdated:
    return DigestUpdated(timestamp=datetime.now(UTC), data=DigestUpdatedData(
        story_id=STORY, digest_id="d1", headline="Budget approved", url="/v1/digests/d1"))


async def _deliver(cms: CmsStub) -> callbacks.DeliveryFailed:
    with pytest.raises(callbacks.DeliveryFailed) as caught:
        await callbacks.deliver(url=cms.url, secret=Settings(callback_url=cms.url, callback_secret=CALLBACK_SECRET)
                                .callback_secret, event=_event(), webhook_id="msg_x", timeout_s=5)  # type: ignore[arg-type]
    return caught.value


async def test_a_410_stops_the_retries(cms: CmsStub) -> None:
    cms.answers = [410]
    failed = await _deliver(cms)
    assert failed.gone and failed.status_code == 410
    assert failed.next_attempt_in(1, Settings()) is None
    assert "answered 410 (Gone: not retried)" in failed.detail


async def test_a_503_with_retry_after_asks_for_that_wait(cms: CmsStub) -> None:
    cms.answers, cms.error_headers = [503], {"Retry-After": "90"}
    failed = await _deliver(cms)
    assert (failed.status_code, failed.retry_after, failed.gone) == (503, 90.0, False)
    assert "answered 503 (Retry-After 90 s)" in failed.detail
    assert failed.next_attempt_in(1, Settings(callback_retry_jitter=0)) == timedelta(seconds=90)
    assert failed.problem()["callback_status"] == 503


# --- through the worker: what GET /v1/jobs/{id} shows --------------------------------------------------------


async def _job_view(hooks: Hooks, job_id: str) -> dict[str, Any]:
    response = await hooks.client.get(f"/v1/jobs/{job_id}", headers={"authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def _first_callback_attempt(hooks: Hooks) -> dict[str, Any]:
    """The callback job as ``GET /v1/jobs/{id}`` shows it once its first attempt is over."""
    payload = article(1)
    hooks.faults.script([*analysis(payload), digest_answer([payload])])
    await hooks.send("article.published", payload, msg_id="msg_sched")
    await hooks.settle("refresh_story")
    deadline = time.monotonic() + 20
    while True:
        found = await hooks.jobs("send_callback")
        if found and found[0].attempts >= 1 and found[0].status != "running":
            return await _job_view(hooks, found[0].id)
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.05)


async def test_a_cms_asking_to_retry_later_gets_its_wait_and_the_job_shows_it(
    sqlite_url: str, hook_settings: Callable[..., Settings], fault_server: FaultServer, cms: CmsStub
) -> None:
    cms.answers, cms.error_headers = [503], {"Retry-After": "120"}
    settings = hook_settings(sqlite_url, callback_url=cms.url, callback_secret=CALLBACK_SECRET,
                             callback_retry_schedule_s=[1], callback_retry_jitter=0)
    async for hooks in open_hooks(settings, fault_server):
        started = datetime.now(UTC)
        view = await _first_callback_attempt(hooks)
        assert view["status"] == "queued" and view["attempts"] == 1 and view["max_attempts"] == 8
        assert view["error"] == f"DeliveryFailed: {cms.url.split('/')[2]} answered 503 (Retry-After 120 s): {{}}"
        next_attempt = datetime.fromisoformat(view["run_after"])
        assert next_attempt >= started + timedelta(seconds=119)  # the CMS's wait, not the 1 s schedule
        assert len(cms.received) == 1


async def test_a_gone_cms_fails_the_job_at_once(
    sqlite_url: str, hook_settings: Callable[..., Settings], fault_server: FaultServer, cms: CmsStub
) -> None:
    cms.answers = [410]
    settings = hook_settings(sqlite_url, callback_url=cms.url, callback_secret=CALLBACK_SECRET, **NO_WAITS)
    async for hooks in open_hooks(settings, fault_server):
        view = await _first_callback_attempt(hooks)
        assert view["status"] == "failed" and view["attempts"] == 1
        assert "answered 410 (Gone: not retried)" in view["error"]
        assert len(cms.received) == 1


async def test_a_failing_cms_is_retried_on_the_schedule_not_the_job_backoff(
    sqlite_url: str, hook_settings: Callable[..., Settings], fault_server: FaultServer, cms: CmsStub
) -> None:
    cms.answers = [500]
    # The general job backoff is 0 here (hook_settings): a wait of about an hour can only be the schedule's.
    settings = hook_settings(sqlite_url, callback_url=cms.url, callback_secret=CALLBACK_SECRET,
                             callback_retry_schedule_s=[3_600], callback_retry_jitter=0.1)
    async for hooks in open_hooks(settings, fault_server):
        started = datetime.now(UTC)
        view = await _first_callback_attempt(hooks)
        wait = datetime.fromisoformat(view["run_after"]) - started
        assert view["status"] == "queued" and view["attempts"] == 1
        assert timedelta(seconds=3_239) <= wait <= timedelta(seconds=3_961)


# --- one trace from the CMS's event to the callback --------------------------------------------------------


async def test_the_cms_event_its_jobs_model_calls_and_callback_are_one_trace(hooks: Hooks, cms: CmsStub) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from service import tracing
    from tests.signing import event, signed

    exporter = InMemorySpanExporter()
    tracing.configure(Settings(), exporter=exporter)
    try:
        payload = article(1)
        hooks.faults.script([*analysis(payload), digest_answer([payload])])
        cms.answers = [200]
        body = event("article.published", payload)
        parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        response = await hooks.post(body, {**signed(body, msg_id="msg_trace"), "traceparent": parent})
        assert response.status_code == 202
        await hooks.settle("refresh_story")
        await hooks.settle("send_callback")
    finally:
        tracing.shutdown()
    spans = exporter.get_finished_spans()
    trace_id = int(parent.split("-")[1], 16)
    names = {s.name for s in spans if s.context.trace_id == trace_id}
    assert "POST /v1/webhooks/cms" in names
    assert {"job refresh_story", "job send_callback"} <= names
    assert sum(name.startswith("chat ") for name in (s.name for s in spans if s.context.trace_id == trace_id)) == 3
