"""No secret leaves the process: not in cassettes, not in log lines, not in error bodies.

The API key used here is ``sk-test-SECRET-123``; the fault server (tests/fake_openai.py) plays an
endpoint that echoes it back in its error bodies (as proxies and some providers do), so any path
that copies an error body into a log line, an exception message or a problem+json body would show it.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from structlog.testing import capture_logs

from schemas import ArticleIn
from service.errors import LLMError, LLMHTTPError, NewsdigestError
from service.llm.client import LLMClient
from service.pipeline.extract import extract_article
from service.pipeline.text import prepare
from service.prompts import Prompt
from service.settings import Settings
from tests.conftest import RECORDING_KEY, ROOT, SECRET_HEADERS
from tests.factories import story
from tests.fake_openai import (
    Fault,
    FaultServer,
    ok,
    status,
)

pytestmark = pytest.mark.block_network(allowed_hosts=[r"127\.0\.0\.1$"])

KEY = "sk-test-SECRET-123"
CASSETTES = sorted(p for p in (ROOT / "cassettes").rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
# What a leaked credential looks like in text, whatever its header was called.
LEAKS = {
    "OpenAI-style key": re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
    "bearer token": re.compile(r"\bBearer\s+[A-Za-z0-9._~+/=-]{16,}", re.IGNORECASE),
    "webhook secret": re.compile(r"\bwhsec_[A-Za-z0-9+/=]+"),
    "basic credentials": re.compile(r"\bBasic\s+[A-Za-z0-9+/=]{12,}"),
}
ARTICLE = ArticleIn(
    id="a-1",
    outlet="Town Herald",
    title="Council passes budget",
    body="The city council approved a budget of $4.2 million on Monday. The vote was 7 to 2.",
)


# --- cassettes ------------------------------------------------------------------------------------


def leaks_in_cassette(text: str) -> list[str]:
    """Every secret-looking header or string in a cassette's text."""
    found = [f"{name}: {m.group(0)[:12]}..." for name, rx in LEAKS.items() for m in rx.finditer(text)]
    if RECORDING_KEY != "test-key" and len(RECORDING_KEY) >= 8 and RECORDING_KEY in text:
        found.append("the recording key from PYTEST_LLM_API_KEY")
    data = yaml.safe_load(text) if text.strip() else None
    for i, interaction in enumerate((data or {}).get("interactions") or []):
        for side in ("request", "response"):
            headers = (interaction.get(side) or {}).get("headers") or {}
            found += [f"interaction {i} {side} header {h!r}" for h in headers if h.lower() in SECRET_HEADERS]
    return found


@pytest.mark.parametrize("path", CASSETTES, ids=[str(p.relative_to(ROOT / "cassettes")) for p in CASSETTES])
def test_no_secret_in_cassettes(path: Path) -> None:
    assert leaks_in_cassette(path.read_text(encoding="utf-8")) == []


def test_the_cassette_scan_finds_what_it_looks_for() -> None:
    """The scan above would see a leak: a key, a bearer token, a webhook secret, a secret header."""
    leaky = {
        "version": 1,
        "interactions": [
            {
                "request": {
                    "method": "POST",
                    "uri": "http://127.0.0.1:8765/v1/chat/completions",
                    "headers": {"Authorization": ["Bearer abcdefghijklmnopqrstuvwxyz012345"], "Api-Key": ["x"]},
                    "parsed_body": {"note": f"key {KEY} and whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
                },
                "response": {"status": {"code": 200}, "headers": {"Set-Cookie": ["session=1"]}},
            }
        ],
    }

    found = leaks_in_cassette(yaml.safe_dump(leaky))

    assert {f.split(":")[0] for f in found} >= {"OpenAI-style key", "bearer token", "webhook secret"}
    assert sum("header" in f for f in found) == 3  # Authorization, Api-Key, Set-Cookie
    assert leaks_in_cassette(yaml.safe_dump({"version": 1, "interactions": []})) == []


# --- a failing call: logs and errors --------------------------------------------------------------


def echoing(code: int) -> Fault:
    """An error answer whose body repeats the key, as a proxy might."""
    body = {"error": {"message": f"Incorrect API key provided: {KEY}.", "type": "invalid_request_error", "code": None}}
    return status(code, body=body)


@pytest.fixture
def llm_settings() -> dict[str, Any]:
    """``make_llm`` (tests/conftest.py) sends this module's key."""
    return {"llm_api_key": KEY}


def rendered(entries: list[dict[str, Any]]) -> str:
    """Captured events as the service prints them: JSON lines (production) and console lines (development)."""
    json_lines = [structlog.processors.JSONRenderer()(None, "", dict(e)) for e in entries]
    console = structlog.dev.ConsoleRenderer(colors=False)
    return "\n".join([*json_lines, *(str(console(None, "", dict(e))) for e in entries)])


def error_surfaces(err: NewsdigestError) -> str:
    """Everything of an error that reaches a caller or a log line: message, repr, problem+json, usage."""
    return "\n".join([str(err), repr(err), err.detail, json.dumps(err.problem()), repr(getattr(err, "usage", None))])


@pytest.mark.parametrize(
    ("script", "requests"),
    [([echoing(401)], 1), ([echoing(500)] * 3, 3), ([echoing(429)] * 3, 3)],
    ids=["401", "500-retried", "429-retried"],
)
async def test_a_failed_call_leaks_the_key_nowhere(
    script: list[Fault],
    requests: int,
    fault_server: FaultServer,
    make_llm: Callable[..., LLMClient],
    prompts: dict[str, Prompt],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fault_server.script(script)
    caplog.set_level(logging.DEBUG)  # openai, httpx and httpcore at their most talkative

    with (
        capture_logs(processors=[structlog.processors.format_exc_info]) as entries,
        pytest.raises(LLMHTTPError) as caught,
    ):
        await extract_article(prepare(ARTICLE, max_chars=10_000), prompts, make_llm(), sequential=True)

    assert len(fault_server.completions) == requests
    assert {r.headers["authorization"] for r in fault_server.completions} == {f"Bearer {KEY}"}  # it was sent
    if requests > 1:
        assert [e["event"] for e in entries].count("llm.retry_scheduled") == requests - 1  # the capture works
    assert KEY not in rendered(entries)
    assert KEY not in caplog.text
    assert all(KEY not in record.getMessage() for record in caplog.records)
    assert KEY not in error_surfaces(caught.value)


async def test_a_story_whose_endpoint_rejects_the_key_leaks_it_nowhere(
    fault_server: FaultServer, make_llm: Callable[..., LLMClient], prompts: dict[str, Prompt]
) -> None:
    """One article fails on a 401 that echoes the key; the published digest names the failure, not the key."""
    other = ArticleIn(id="b-1", outlet="City Wire", body="Councillors approved the $4.2 million budget on Monday.")
    claim = prepare(other, max_chars=10_000).sentence(1).text
    fault_server.script(
        [
            echoing(401),
            ok({"facts": [{"claim": claim, "sentences": [1]}]}),
            ok({"overall": "neutral", "score": 0.0, "sentences": [1], "entities": []}),
            ok({"headline": claim, "statements": [{"text": claim, "facts": ["A1.F1"]}]}),
        ]
    )

    with capture_logs(processors=[structlog.processors.format_exc_info]) as entries:
        digest = await story([ARTICLE, other], prompts, make_llm(), max_chars=10_000, sequential=True)

    (failed,) = [s for s in digest.sources if s.status == "failed"]
    assert failed.error is not None and "401" in failed.error
    assert KEY not in digest.model_dump_json()
    assert any(e["event"] == "article.failed" for e in entries)
    assert KEY not in rendered(entries)


def test_settings_never_show_the_key() -> None:
    settings = Settings(
        llm_api_key=KEY,
        api_keys=["cms-key-SECRET-456"],
        webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )

    shown = "\n".join([repr(settings), str(settings), settings.model_dump_json()])

    for secret in (KEY, "cms-key-SECRET-456", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"):
        assert secret not in shown


async def test_the_error_object_itself_carries_no_copy_of_the_key(
    fault_server: FaultServer, make_llm: Callable[..., LLMClient], prompts: dict[str, Prompt]
) -> None:
    fault_server.script([echoing(401)])

    with pytest.raises(LLMError) as caught:
        await extract_article(prepare(ARTICLE, max_chars=10_000), prompts, make_llm(), sequential=True)

    err = caught.value
    assert KEY not in getattr(err, "body", "")
    assert KEY not in "".join(traceback.format_exception(err))
