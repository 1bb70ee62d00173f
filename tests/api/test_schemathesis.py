"""The HTTP API against its own OpenAPI document, fuzzed by schemathesis.

A real server (uvicorn on a free 127.0.0.1 port, in a thread, over a temporary SQLite database, then
over PostgreSQL) is called with requests generated from ``create_app(settings).openapi()``, valid
and invalid. Every answer must be documented: no 5xx, a documented status, content type, headers
and body schema, and problem+json for every error. Valid requests must be accepted, except where
the refusal depends on what JSON Schema cannot say (``SEMANTIC_REFUSALS``). Webhook cases generated
as valid are signed here, so their bodies are really read. No model is called: the worker is off,
so POSTs only queue jobs, and ``wait`` is kept short so a request never sits out the full minute.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import structlog
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.api import create_app
from service.settings import Settings
from tests.databases import DATABASES, open_database
from tests.fake_openai import serve_faults
from tests.processes import free_port

pytestmark = pytest.mark.block_network(allowed_hosts=[r"127\.0\.0\.1$"])

API_KEY = "test-key"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MAX_WAIT_S = 0.2


def api_settings(database_url: str, llm_base_url: str = "http://127.0.0.1:9/v1") -> Settings:
    return Settings(
        database_url=database_url,
        api_keys=[API_KEY],
        webhook_secret=WEBHOOK_SECRET,
        # The fault server, for /readyz's model check only: with the worker off, no job asks the model.
        llm_base_url=llm_base_url,
        llm_api_key="unused",
        llm_mode="json_object",
        run_worker=False,
        migrate_on_start=True,
        readiness_timeout_s=0.5,
        story_refresh_delay_s=3600,
    )


# The document is built without starting anything: create_app does no I/O until its lifespan.
schema = schemathesis.openapi.from_dict(create_app(api_settings("sqlite+aiosqlite:///unused.db")).openapi())
# Every request carries the bearer key (added below), so generated cases "without Authorization" would
# be sent with it; and unknown query parameters are ignored by design, as HTTP APIs do for the clients
# of a newer version. Auth failures and unknown-field bodies have tests of their own (tests/api).
schema.config.generation.update(with_security_parameters=False, allow_extra_parameters=False)
# Schema-valid requests that are refused for what JSON Schema cannot express, by problem type. Any other
# refusal of a valid request (a 422 invalid-input with its list of fields, above all) fails the test.
SEMANTIC_REFUSALS = {
    # A body without a single letter or digit (markup holding none is accepted, and its analysis job fails).
    "empty-article": "an article body with no readable sentence",
    # The published prompt versions are files on the server, not part of the document.
    "unknown-prompt-version": "a pinned prompt version that does not exist",
    # max_article_chars is a setting (default 60,000 characters); the document states no body length.
    "article-too-large": "an article body over the configured character limit",
    # Depends on earlier requests: the same Idempotency-Key sent before with another request.
    "idempotency-key-reused": "an Idempotency-Key already used for a different request",
    # Depends on stored rows: an article id that is not stored, a story with no articles, or an article
    # of another story than the digest's story_id (problem extras name them).
    "invalid-input": "unknown article ids, a story without articles, or articles of another story",
}


def valid_requests_are_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """``positive_data_acceptance``, but a documented refusal of ``SEMANTIC_REFUSALS`` is not a failure."""
    if response.status_code in (413, 422):
        try:
            problem = json.loads(response.content)
        except ValueError:
            problem = {}
        kind = str(problem.get("type", "")).rsplit("/", 1)[-1]
        # invalid-input from request validation lists its fields; the semantic one names ids instead.
        if kind in SEMANTIC_REFUSALS and not (kind == "invalid-input" and "errors" in problem):
            return None
    return positive_data_acceptance(ctx, response, case)


# Replaced by the check above, which tolerates only the refusals JSON Schema cannot express.
EXCLUDED = [positive_data_acceptance]
ADDED = [valid_requests_are_accepted]
WEBHOOK = "POST /v1/webhooks/cms"


@pytest.fixture(scope="module", autouse=True)
def plain_tracebacks() -> Iterator[None]:
    """structlog's default console renderer prints a crash as a rich traceback with every frame's locals:
    seconds of CPU per 500 on this machine, during which the server answers nobody. Plain ones here."""
    processors = structlog.get_config()["processors"]
    saved = list(processors)
    processors[:] = [
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        if isinstance(p, structlog.dev.ConsoleRenderer)
        else p
        for p in processors
    ]
    yield
    processors[:] = saved


@pytest.fixture(scope="module", params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``database_url`` for the whole module: one server per database for the whole fuzzing run."""
    return open_database(request, request.param, tmp_path_factory.mktemp("schemathesis"))


@pytest.fixture(scope="module")
def base_url(database_url: str) -> Iterator[str]:
    """``newsdigest serve``'s app in uvicorn on 127.0.0.1, for the whole module, per database."""
    with serve_faults() as model:
        app = create_app(api_settings(database_url, model.base_url))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, name="uvicorn-schemathesis", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)
        assert model.unscripted == 0, "a model completion was requested although no worker runs"


# Headers that frame the HTTP message itself: a garbled one is refused by uvicorn's HTTP parser with a
# plain 400 before any route runs, which tests h11, not this API's documented answers.
FRAMING_HEADERS = {"transfer-encoding", "content-length", "connection", "te", "trailer", "upgrade", "host", "expect"}


def _sign(case: Any) -> None:
    """Sign a webhook case generated as valid, as the CMS would (Standard Webhooks, over the bytes that
    the HTTP client sends: ``json.dumps`` of the body). Invalid cases keep their generated headers."""
    if case.operation.label != WEBHOOK or case.meta is None or not case.meta.generation.mode.is_positive:
        return
    raw = json.dumps(case.body).encode()
    timestamp = str(int(time.time()))
    msg_id = str((case.headers or {}).get("webhook-id") or "msg")
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()
    case.headers = {**(case.headers or {}), "webhook-id": msg_id, "webhook-timestamp": timestamp,
                    "webhook-signature": "v1," + base64.b64encode(mac).decode()}


def _prepare(case: Any) -> None:
    """Cut a valid ``wait`` to 0.2 s (nothing runs the job, so the full wait would only cost time), leave
    the message framing to the HTTP client, and sign valid webhook cases."""
    for name in [h for h in (case.headers or {}) if h.lower() in FRAMING_HEADERS]:
        del case.headers[name]
    _sign(case)
    query = case.query or {}
    value = query.get("wait")
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 60:
        query["wait"] = min(value, MAX_WAIT_S)


@schema.parametrize()
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: Any, base_url: str) -> None:
    _prepare(case)
    case.call_and_validate(
        base_url=base_url, headers={"Authorization": f"Bearer {API_KEY}"}, excluded_checks=EXCLUDED,
        additional_checks=ADDED, timeout=10,
    )


@pytest.mark.parametrize("path", ["/v1/digests/dg-1", "/v1/stories/st-1/digest"])
def test_a_non_latin1_api_key_in_the_url_is_refused(path: str, base_url: str) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
        response = client.get(path, params={"api_key": "k\U00100366y"})

    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("application/problem+json")
