"""No input is a 500: what used to crash the API is refused with a 4xx problem, the same on every database.

Each test runs on SQLite and on PostgreSQL, where a NUL in text, a date past the calendar's end and
a body nested 30,000 levels deep used to be 500s. Refused requests write nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import uvicorn
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from structlog.testing import capture_logs

from schemas.article import storable_text
from service.api.deps import caller_hash
from service.api.http import ProblemH11Protocol
from service.article_files import load_article
from service.errors import InputError
from service.settings import Settings
from service.store.models import IdempotencyKey
from tests.factories import article
from tests.fake_openai import FaultServer
from tests.processes import free_port
from tests.running_app import API_KEY, Api, open_api

PROBLEM = "application/problem+json"
SECRET_TEXT = "Confidential draft: the minister resigns tomorrow"


@pytest.fixture
async def idle_api(database_url: str, settings_for: Callable[..., Settings],
                   fault_server: FaultServer) -> AsyncIterator[Api]:
    """The API on SQLite and PostgreSQL with no worker: jobs stay queued, nothing asks the model."""
    async for running in open_api(settings_for(database_url, run_worker=False), fault_server):
        yield running


def problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == f"https://newsdigest.dev/problems/{kind}"
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def post_json(api: Api, path: str, payload: Any) -> httpx.Response:
    """Sent as json.dumps writes it: a lone surrogate travels as the escape \\ud800, as any JSON client sends it."""
    return await api.client.post(path, content=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})


# --- 1. NUL and lone surrogates ---------------------------------------------------------------------------

UNSTORABLE = {"NUL": "\x00", "lone surrogate": "\ud800"}
TEXT_FIELDS = ["body", "outlet", "title", "id", "story_id", "url"]


@pytest.mark.parametrize("char", list(UNSTORABLE.values()), ids=list(UNSTORABLE))
@pytest.mark.parametrize("field", TEXT_FIELDS)
async def test_nul_or_a_lone_surrogate_in_an_article_field_is_a_422_naming_it(idle_api: Api, field: str,
                                                                               char: str) -> None:
    payload = {**article(1), "url": "https://example.org/a"}
    payload[field] = f"Budget{char} news. The council met."

    response = await post_json(idle_api, "/v1/articles", payload)

    body = problem(response, 422, "invalid-input")
    assert [e["loc"] for e in body["errors"]] == [["body", field]]
    assert f"body.{field}" in body["detail"]
    assert set((await idle_api.counts()).values()) == {0}


@pytest.mark.parametrize("char", list(UNSTORABLE.values()), ids=list(UNSTORABLE))
@pytest.mark.parametrize(("payload", "loc"), [
    ({"article_ids": ["cms-1", "x{c}"]}, ["body", "article_ids", 1]),
    ({"story_id": "x{c}"}, ["body", "story_id"]),
], ids=["article_ids", "story_id"])
async def test_nul_or_a_lone_surrogate_in_a_digest_request_is_a_422_naming_it(
        idle_api: Api, payload: dict[str, Any], loc: list[Any], char: str) -> None:
    sent = json.loads(json.dumps(payload).replace("{c}", json.dumps(char)[1:-1]))

    body = problem(await post_json(idle_api, "/v1/digests", sent), 422, "invalid-input")

    assert [e["loc"] for e in body["errors"]] == [loc]
    assert set((await idle_api.counts()).values()) == {0}


@pytest.mark.parametrize(("path", "name"), [
    ("/v1/jobs/%00", "job_id"), ("/v1/articles/a%00b", "article_id"), ("/v1/digests/%00", "digest_id"),
    ("/v1/stories/%00/digest", "story_id"),
])
async def test_nul_in_a_path_id_is_a_422_naming_it(idle_api: Api, path: str, name: str) -> None:
    body = problem(await idle_api.client.get(path), 422, "invalid-input")

    assert [e["loc"] for e in body["errors"]] == [["path", name]]


@pytest.mark.parametrize("escape", ["\\u0000", "\\ud800"])
def test_an_article_file_with_nul_or_a_lone_surrogate_is_refused(tmp_path: Path, escape: str) -> None:
    path = tmp_path / "article.json"
    path.write_text('{"outlet": "O", "body": "The council met' + escape + ' on Monday."}', encoding="utf-8")

    with pytest.raises(InputError, match="invalid article"):
        load_article(path)


def test_the_text_rule_keeps_everything_else() -> None:
    text = "Caf\u00e9 \U0001f600 \u200b\t\n\u0001 \uffff"
    assert storable_text(text) == text
    with pytest.raises(ValueError, match="U\\+0000"):
        storable_text("a\x00")
    with pytest.raises(ValueError, match="U\\+DFFF"):
        storable_text("a\udfff")


# --- 2. Dates near the ends of the calendar ----------------------------------------------------------------

@pytest.mark.parametrize("published_at", [
    "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "9999-01-01T00:00:00Z", "1899-12-31T23:59:59Z",
    1_700_000_000,
])
async def test_a_date_outside_the_stored_range_is_a_422(idle_api: Api, published_at: Any) -> None:
    response = await post_json(idle_api, "/v1/articles", {**article(1), "published_at": published_at})

    body = problem(response, 422, "invalid-input")
    assert [e["loc"] for e in body["errors"]] == [["body", "published_at"]]
    assert "1900 to 9998" in body["detail"]
    assert set((await idle_api.counts()).values()) == {0}


@pytest.mark.parametrize(("published_at", "in_utc"), [("9998-12-31T23:59:59-14:00", "9999-01-01T13:59:59Z"),
                                                      ("1900-01-01T00:00:00+14:00", "1899-12-31T10:00:00Z")])
async def test_dates_at_the_ends_of_the_range_are_stored(idle_api: Api, published_at: str, in_utc: str) -> None:
    response = await post_json(idle_api, "/v1/articles", {**article(1), "published_at": published_at})

    assert response.status_code == 202, response.text
    view = (await idle_api.client.get("/v1/articles/cms-1")).json()
    assert view["article"]["published_at"] == in_utc


# --- 3. Deep nesting ---------------------------------------------------------------------------------------

async def test_json_nested_30000_levels_deep_is_refused_before_parsing(idle_api: Api) -> None:
    deep = b'{"outlet": "O", "body": "The council met.", "title": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"

    response = await idle_api.client.post("/v1/articles", content=deep, headers={"Content-Type": "application/json"})

    body = problem(response, 422, "json-too-deep")
    assert body["limit"] == 32
    assert set((await idle_api.counts()).values()) == {0}


async def test_brackets_inside_strings_do_not_count_as_nesting(idle_api: Api) -> None:
    payload = {**article(1), "title": "[" * 100 + "{\\\"" * 50}

    response = await post_json(idle_api, "/v1/articles", payload)

    assert response.status_code == 202, response.text


# --- 4. Crash log lines ------------------------------------------------------------------------------------

async def test_a_crash_is_a_500_problem_logged_with_its_request_id_and_no_parameters(
        idle_api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async def broken(**kwargs: Any) -> None:
        text = kwargs["article"].body
        raise DBAPIError("INSERT INTO articles (body) VALUES ($1)", (text,), Exception(f"refused: {text}"))

    monkeypatch.setattr("service.store.articles.save_received", broken)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars,
                                  structlog.processors.format_exc_info]) as entries:
        response = await post_json(idle_api, "/v1/articles", {**article(1), "body": SECRET_TEXT + "."})

    body = problem(response, 500, "internal-error")
    crashes = [e for e in entries if e["event"] == "request.crashed"]
    assert len(crashes) == 1
    assert crashes[0]["request_id"] == body["request_id"]
    assert crashes[0]["error_type"] == "DBAPIError"
    assert "exception" not in crashes[0] and "exc_info" not in crashes[0]
    everything = repr(entries) + caplog.text
    assert SECRET_TEXT not in everything and "INSERT INTO" not in everything
    assert SECRET_TEXT not in response.text


# --- 5. A 422's list of errors -----------------------------------------------------------------------------

async def test_the_errors_of_a_422_are_capped_and_counted(idle_api: Api) -> None:
    payload = {**article(1), **{f"k{n:05}": 0 for n in range(60_000)}}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    assert len(raw) < 1_000_000

    response = await idle_api.client.post("/v1/articles", content=raw, headers={"Content-Type": "application/json"})

    body = problem(response, 422, "invalid-input")
    assert len(body["errors"]) == 50
    assert body["errors_omitted"] == 60_000 - 50
    assert len(response.content) < 20_000


@pytest.mark.parametrize("key", ["k" * 5000, "\ud800" + "k" * 10], ids=["long", "lone surrogate"])
async def test_an_unknown_key_is_named_short_and_encodable(idle_api: Api, key: str) -> None:
    response = await post_json(idle_api, "/v1/articles", {"outlet": "O", "body": "The council met.", key: 1})

    body = problem(response, 422, "invalid-input")
    assert all(len(str(part)) <= 67 for e in body["errors"] for part in e["loc"])


# --- 6. A story's digest holds only the story's articles ---------------------------------------------------

async def test_a_digest_for_a_story_refuses_articles_of_another_story(idle_api: Api) -> None:
    assert (await post_json(idle_api, "/v1/articles", article(1, story_id="story-x"))).status_code == 202
    assert (await post_json(idle_api, "/v1/articles", article(2, story_id="story-y"))).status_code == 202
    before = await idle_api.counts()

    response = await post_json(idle_api, "/v1/digests", {"article_ids": ["cms-1"], "story_id": "story-y"})

    body = problem(response, 422, "invalid-input")
    assert body["article_ids"] == ["cms-1"] and body["story_id"] == "story-y"
    assert await idle_api.counts() == before
    same_story = await post_json(idle_api, "/v1/digests", {"article_ids": ["cms-2"], "story_id": "story-y"})
    assert same_story.status_code == 202, same_story.text


# --- 7. Idempotency records keep a keyed hash of the API key ------------------------------------------------

async def test_idempotency_records_keep_an_hmac_of_the_api_key(idle_api: Api) -> None:
    response = await idle_api.client.post("/v1/articles", json=article(1), headers={"Idempotency-Key": "k-1"})
    assert response.status_code == 202, response.text

    async with idle_api.app.state.runtime.sessions() as session:
        stored = (await session.scalars(select(IdempotencyKey.api_key_hash))).one()
    settings: Settings = idle_api.app.state.settings
    assert stored != hashlib.sha256(API_KEY.encode()).hexdigest()
    assert stored == caller_hash(settings, API_KEY.encode())
    assert len(stored) == 64


def test_the_caller_hash_is_keyed_by_the_server_secret(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/nd.db"
    derived = Settings(database_url=url, api_keys=[API_KEY])
    configured = Settings(database_url=url, api_keys=[API_KEY], key_hash_secret="s3cret")
    other = Settings(database_url=url, api_keys=[API_KEY], key_hash_secret="other")

    assert caller_hash(configured, b"k") == hmac.new(b"s3cret", b"k", hashlib.sha256).hexdigest()
    assert len({caller_hash(s, b"k") for s in (derived, configured, other)}) == 3
    assert caller_hash(derived, b"k") == caller_hash(Settings(database_url=url, api_keys=[API_KEY]), b"k")


# --- 8. An unreadable Content-Length -------------------------------------------------------------------------

async def test_a_content_length_that_is_not_a_number_is_a_400_problem(idle_api: Api) -> None:
    request = idle_api.client.build_request("POST", "/v1/articles", content=b"{}",
                                            headers={"Content-Type": "application/json"})
    request.headers["Content-Length"] = "abc"

    body = problem(await idle_api.client.send(request), 400, "bad-request")

    assert "Content-Length" in body["detail"]


@pytest.fixture
def served(tmp_path: Path, settings_for: Callable[..., Settings]) -> Iterator[int]:
    """The app in a real uvicorn (as ``newsdigest serve`` runs it) on a free 127.0.0.1 port."""
    from service.api import create_app

    app = create_app(settings_for(f"sqlite+aiosqlite:///{tmp_path}/nd.db", run_worker=False))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                           http=ProblemH11Protocol))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=30)


def test_an_unreadable_content_length_is_a_problem_even_before_the_app(served: int) -> None:
    """uvicorn's HTTP parser refuses it before the app sees it; the protocol ``serve`` runs answers as
    problem+json all the same (uvicorn's own protocol answers plain text)."""
    with socket.create_connection(("127.0.0.1", served), timeout=10) as sock:
        sock.sendall(b"POST /v1/articles HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Length: abc\r\n\r\n{}")
        received = b""
        while chunk := sock.recv(65536):  # the server closes the connection after its answer
            received += chunk
        answer = received.decode("latin-1")

    head, _, body = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400 "), answer
    assert "content-type: application/problem+json" in head.lower(), answer
    problem = json.loads(body)
    assert problem["status"] == 400 and problem["type"].endswith("/bad-request"), problem


# --- 9. Short HTML keeps its text ---------------------------------------------------------------------------

async def test_a_short_html_body_keeps_its_text(idle_api: Api) -> None:
    payload = {"outlet": "O", "content_type": "html", "body": "<p>The council approved the budget on Monday.</p>"}

    response = await post_json(idle_api, "/v1/articles", payload)

    assert response.status_code == 202, response.text
    view = (await idle_api.client.get(f"/v1/articles/{response.json()['article_id']}")).json()
    assert view["article"]["outlet"] == "O"


@pytest.mark.parametrize("html", ["<p> </p>", "<html><body><script>alert('The council met.')</script></body></html>",
                                  "<div><style>p { color: red; }</style><noscript>Enable scripts.</noscript></div>"])
async def test_html_without_text_outside_scripts_and_navigation_is_an_unusable_article(api: Api, html: str) -> None:
    """Accepted (only preparing finds out, and the intake does not prepare), then a failed job, never a 500."""
    response = await post_json(api, "/v1/articles", {"outlet": "O", "content_type": "html", "body": html})

    assert response.status_code == 202, response.text
    job = await api.job(response.json()["job_id"])
    assert job["status"] == "failed" and "no readable sentence" in job["error"]
    view = (await api.client.get(f"/v1/articles/{response.json()['article_id']}")).json()
    assert view["status"] == "failed" and "no readable sentence" in view["error"]


@pytest.mark.parametrize("body", ["", "   ", "\u200b\u200f", "... -- !?"])
async def test_a_body_without_a_letter_or_digit_is_still_refused(idle_api: Api, body: str) -> None:
    response = await post_json(idle_api, "/v1/articles", {"outlet": "O", "content_type": "html", "body": body})

    problem(response, 422, "empty-article")


# --- 10. The OpenAPI document is the whole contract ----------------------------------------------------------

async def test_the_openapi_document_states_headers_bodies_and_bounds(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()
    paths, components = document["paths"], document["components"]["schemas"]

    webhook = paths["/v1/webhooks/cms"]["post"]
    assert webhook["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/CmsEvent"}
    assert {"ArticlePublished", "ArticleUpdated", "ArticleDeleted", "CmsArticle"} <= set(components)
    assert {(p["name"], p["in"], p["required"]) for p in webhook["parameters"]} == {
        ("webhook-id", "header", True), ("webhook-timestamp", "header", True), ("webhook-signature", "header", True)}
    for path in ("/v1/articles", "/v1/digests"):
        post = paths[path]["post"]
        key = next(p for p in post["parameters"] if p["name"] == "Idempotency-Key")
        assert key["in"] == "header" and key["schema"]["type"] == "string" and key["schema"]["maxLength"] == 255
        assert set(post["responses"]["202"]["headers"]) == {"Location", "Idempotent-Replayed"}
        assert set(post["responses"]["200"]["headers"]) == {"Idempotent-Replayed"}
    assert set(paths["/v1/digests/{digest_id}"]["get"]["responses"]["202"]["headers"]) == {"Location", "Retry-After"}

    digest = components["DigestRequest"]
    assert [option["required"] for option in digest["anyOf"]] == [["article_ids"], ["story_id"]]
    items = digest["properties"]["article_ids"]["anyOf"][0]["items"]
    assert (items["minLength"], items["maxLength"]) == (1, 200)
    published_at = components["ArticleIn"]["properties"]["published_at"]["anyOf"][0]
    assert published_at["format"] == "date-time" and published_at["pattern"].startswith("^(19")
    job_id = paths["/v1/jobs/{job_id}"]["get"]["parameters"][0]["schema"]
    assert job_id["pattern"] == "^[^\\u0000]*$"


async def test_an_empty_digest_request_is_refused_as_the_document_says(idle_api: Api) -> None:
    bodies: list[dict[str, Any]] = [{}, {"article_ids": None}, {"story_id": None}, {"article_ids": []}]
    for body in bodies:
        problem(await post_json(idle_api, "/v1/digests", body), 422, "invalid-input")
