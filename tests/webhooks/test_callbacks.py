"""digest.updated reaches the CMS signed, and a failing CMS is retried with backoff until it takes it."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from service.settings import Settings
from tests.api.answers import analysis, article, digest_answer
from tests.fault_server import FaultServer, closed_port_url
from tests.webhooks.conftest import API_KEY, CALLBACK_SECRET, Hooks, open_hooks, verify

STORY = "council-budget"


@dataclass
class CmsStub:
    """A CMS endpoint on 127.0.0.1 that answers from a script and checks every signature itself."""

    answers: list[int]
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

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


@pytest.fixture
async def hooks(sqlite_url: str, hook_settings: Callable[..., Settings], fault_server: FaultServer,
                cms: CmsStub) -> AsyncIterator[Hooks]:
    settings = hook_settings(sqlite_url, callback_url=cms.url, callback_secret=CALLBACK_SECRET)
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
                             callback_max_attempts=2)
    async for hooks in open_hooks(settings, fault_server):
        payload = article(1)
        hooks.faults.script([*analysis(payload), digest_answer([payload])])
        await hooks.send("article.published", payload, msg_id="msg_down")
        (refresh,) = await hooks.settle("refresh_story")
        (callback,) = await hooks.settle("send_callback")
        assert refresh.status == "succeeded"  # the digest is published whatever the CMS does
        assert callback.status == "failed" and callback.attempts == 2
        assert callback.error is not None and callback.error.startswith("CallbackFailed: could not deliver")
