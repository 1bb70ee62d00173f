"""Property: no input makes the API answer 5xx, and a refused request writes no row.

Hypothesis sends every route arbitrary Unicode text (NUL and lone surrogates included), dates of any
year and offset (and numbers and junk where a date goes), JSON of any shape and JSON nested up to
50,000 levels deep, on SQLite and on PostgreSQL. Webhook events are signed, so their bodies are read.
The app runs in process, on an event loop of its own in a thread, for one test (one route, one
database); the worker is off, so nothing asks the model. ``MAX_EXAMPLES`` examples per route and
database; ``deadline=None`` because PostgreSQL round trips vary on a busy machine.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta, timezone
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from service.api import create_app
from service.settings import Settings
from service.store.models import Base
from tests.running_app import API_KEY
from tests.signing import signed

MAX_EXAMPLES = 100
SECRET = "whsec_" + base64.b64encode(b"newsdigest-property-test-secret!").decode()
PROBLEM = "application/problem+json"
#: Examples sent and statuses answered, per test: printed at the end of the module (pytest -s) for the report.
SEEN: dict[str, Counter[int]] = {}

# --- strategies -------------------------------------------------------------------------------------------

# Any code point, surrogates included, with the troublesome ones drawn often.
characters = st.characters(exclude_categories=()) | st.sampled_from(["\x00", "\ud800", "\udfff", "\ufeff", "\u202e"])
plain = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30)
#: Text with NUL or a lone surrogate for sure, between ordinary characters: what stores disagree on.
hostile = st.builds("".join, st.tuples(plain, st.sampled_from(["\x00", "\ud800", "\udfff"]), plain))
text = st.text(characters, max_size=60) | hostile
short_text = st.text(characters, min_size=1, max_size=20) | hostile
offsets = st.builds(timezone, st.timedeltas(min_value=-timedelta(hours=23, minutes=59),
                                            max_value=timedelta(hours=23, minutes=59)))
dates: st.SearchStrategy[Any] = (st.datetimes(timezones=offsets | st.none()).map(lambda d: d.isoformat())
                                 | st.integers() | st.floats(allow_nan=False) | text)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8)
#: How deep the raw nesting goes when a request carries it (the guard allows 32 levels).
depths = st.integers(min_value=1, max_value=50_000)


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly well typed, sometimes any JSON at all."""
    return st.one_of(values, values, values, json_values)


FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "id": maybe(text), "story_id": maybe(text), "outlet": maybe(short_text), "title": maybe(text),
    "body": maybe(st.just("The council approved the budget on Monday. ") | text),
    "content_type": maybe(st.sampled_from(["text", "html"])), "url": maybe(text), "published_at": maybe(dates),
    "language": maybe(st.sampled_from(["en", "de"]) | text),
}
article_fields = st.fixed_dictionaries({}, optional=FIELDS)
one_field = st.sampled_from(sorted(FIELDS)).flatmap(lambda name: FIELDS[name].map(lambda value: {name: value}))
VALID_ARTICLE = {"id": "a-1", "story_id": "s-1", "outlet": "O", "body": "The council approved the budget on Monday."}
#: A valid article with some fields drawn anew (so most requests get past validation), or anything at all.
articles = st.one_of(
    one_field.map(lambda drawn: {**VALID_ARTICLE, **drawn}),
    one_field.map(lambda drawn: {**VALID_ARTICLE, **drawn}),
    article_fields.map(lambda drawn: {**VALID_ARTICLE, **drawn}),
    st.builds(lambda a, extra: {**VALID_ARTICLE, **a, **extra}, article_fields,
              st.dictionaries(text, json_values, max_size=3)),
    article_fields, json_values)
digest_requests = st.one_of(
    st.fixed_dictionaries({}, optional={"article_ids": maybe(st.lists(st.just("a-1") | text, max_size=4)),
                                        "story_id": maybe(st.sampled_from(["s-1", "s-2"]) | text)}),
    json_values)
events = st.one_of(
    st.fixed_dictionaries({
        "type": st.sampled_from(["article.published", "article.updated", "article.deleted"]) | text,
        "timestamp": maybe(dates),
        "data": maybe(st.builds(lambda a, ident: {**VALID_ARTICLE, **a, "id": ident}, article_fields,
                                maybe(short_text))),
    }),
    json_values)


@st.composite
def bodies(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    """A JSON body as a client sends it (json.dumps escapes lone surrogates), sometimes with one value
    replaced by arrays nested ``depths`` deep."""
    value = draw(values)
    if draw(st.booleans()) and isinstance(value, dict) and value:
        key = draw(st.sampled_from(sorted(value)))
        depth = draw(depths)
        value[key] = "__DEEP__"
        return json.dumps(value).replace('"__DEEP__"', "[" * depth + "]" * depth).encode()
    return json.dumps(value).encode()


queries: st.SearchStrategy[dict[str, str]] = st.just({}) | st.just({}) | st.fixed_dictionaries({}, optional={
    "wait": st.sampled_from(["0", "0.01"]) | text, "prompt": st.just("key_facts@1") | text,
    "format": st.sampled_from(["json", "md", "html"]) | text,
})

# --- the app on a loop of its own ---------------------------------------------------------------------------


class Running:
    """The app and an httpx client on an event loop in a thread; the test calls in from outside."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.served = asyncio.run_coroutine_threadsafe(self._serve(settings), self.loop)
        if not self.ready.wait(60):
            self.served.result(timeout=1)  # raises what went wrong
            raise AssertionError("the app did not start")

    async def _serve(self, settings: Settings) -> None:
        self.stop = asyncio.Event()
        self.app = create_app(settings)
        # One task enters and leaves the lifespan; requests are tasks of their own.
        async with LifespanManager(self.app, startup_timeout=60, shutdown_timeout=30) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                         headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as client:
                self.client = client
                self.ready.set()
                await self.stop.wait()

    def run(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        return asyncio.run_coroutine_threadsafe(work(), self.loop).result(timeout=120)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.run(lambda: self.client.request(method, path, **kwargs))  # type: ignore[no-any-return]

    def counts(self) -> dict[str, int]:
        async def count() -> dict[str, int]:
            async with self.app.state.runtime.sessions() as session:
                return {t.name: int(await session.scalar(select(func.count()).select_from(t)) or 0)
                        for t in Base.metadata.sorted_tables}
        return self.run(count)  # type: ignore[no-any-return]

    def close(self) -> None:
        assert self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.served.result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


@pytest.fixture
def running(database_url: str, settings_for: Callable[..., Settings]) -> Iterator[Running]:
    app = Running(settings_for(database_url, run_worker=False, webhook_secret=SECRET, story_refresh_delay_s=3600))
    try:
        yield app
    finally:
        app.close()


def encoded(value: str) -> str:
    """Percent-encoded UTF-8, a lone surrogate as its (invalid) UTF-8 bytes, as a careless client would send it."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def check(running: Running, name: str, method: str, path: str, params: dict[str, str] | None = None,
          **kwargs: Any) -> httpx.Response:
    """Send one request: never a 5xx, errors are problems, and a refusal leaves every table as it was."""
    if params:
        path += "?" + "&".join(f"{encoded(k)}={encoded(v)}" for k, v in params.items())
    before = running.counts() if method == "POST" else None
    response = running.request(method, path, **kwargs)
    SEEN.setdefault(name, Counter())[response.status_code] += 1
    assert response.status_code < 500, f"{method} {path}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        assert response.headers["content-type"] == PROBLEM, response.text[:500]
        if before is not None:
            assert running.counts() == before, f"{method} {path} refused with {response.status_code} but wrote rows"
    return response


PROPERTY = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])
JSON = {"Content-Type": "application/json"}

# --- properties ----------------------------------------------------------------------------------------------


@PROPERTY
@given(body=bodies(articles), params=queries, key=st.none() | short_text.filter(str.isprintable).map(str.strip))
def test_post_articles_never_5xx_and_refusals_write_nothing(running: Running, body: bytes, params: dict[str, str],
                                                           key: str | None) -> None:
    headers: dict[str, Any] = {**JSON, **({"Idempotency-Key": key.encode("utf-8", "surrogatepass")} if key else {})}
    check(running, "POST /v1/articles", "POST", "/v1/articles", content=body, params=params, headers=headers)


@PROPERTY
@given(body=bodies(digest_requests), params=queries, seeded=st.booleans())
def test_post_digests_never_5xx_and_refusals_write_nothing(running: Running, body: bytes, params: dict[str, str],
                                                          seeded: bool) -> None:
    if seeded:  # an article to name, so story and id checks run against a stored row too
        running.request("POST", "/v1/articles", json=VALID_ARTICLE)
    check(running, "POST /v1/digests", "POST", "/v1/digests", content=body, params=params, headers=JSON)


@PROPERTY
@given(body=bodies(events), msg_id=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                                              max_size=40))
def test_signed_webhooks_never_5xx_and_refusals_write_nothing(running: Running, body: bytes, msg_id: str) -> None:
    check(running, "POST /v1/webhooks/cms", "POST", "/v1/webhooks/cms", content=body,
          headers=signed(body, secret=SECRET, msg_id=msg_id))


@pytest.mark.parametrize("template", ["/v1/articles/{}", "/v1/digests/{}", "/v1/stories/{}/digest", "/v1/jobs/{}"])
@PROPERTY
@given(ident=short_text, params=queries)
def test_reads_by_any_id_never_5xx(running: Running, template: str, ident: str, params: dict[str, str]) -> None:
    check(running, f"GET {template}", "GET", template.format(encoded(ident)), params=params)


def teardown_module() -> None:
    for name, statuses in sorted(SEEN.items()):
        print(f"{name}: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
