"""The fault matrix: every way an endpoint fails, through the real pipeline, seen from outside.

Each row scripts tests/fake_openai.py (real sockets, the real ``openai`` client inside
``service.llm.client.LLMClient``) and runs ``service.pipeline.extract.extract_article`` or
``service.pipeline.story.digest_story`` as the API and the CLI do. A row states what a caller would see:
recovered after k attempts (``provenance.calls[].attempts``), re-asked once and then exactly so
many facts kept and rejected, or a typed error, with the number of HTTP requests bounded by the
settings. Whatever happens, no fact is returned whose quotes are not the sentences it cites.

Calls run with ``sequential=True`` so that the scripted answers meet the requests in a known
order (key facts, then sentiment, article by article, then the digest).
"""

from __future__ import annotations

import gc
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from schemas import ArticleIn, PreparedArticle
from service.errors import (
    LLMError,
    LLMHTTPError,
    LLMUnavailable,
)
from service.llm.client import LLMClient
from service.pipeline.extract import extract_article
from service.pipeline.text import prepare
from service.prompts import Prompt
from tests.factories import assert_digest_traceable, assert_traceable, own_fact, story
from tests.fake_openai import (
    MALFORMED_CONTENT,
    Fault,
    FaultServer,
    closed_port_url,
    delay,
    insufficient_quota,
    length,
    malformed,
    ok,
    prompt_name,
    refusal,
    reset,
    status,
)

pytestmark = pytest.mark.block_network(allowed_hosts=[r"127\.0\.0\.1$"])

MAX_ATTEMPTS = 3
TIMEOUT_S = 0.5
MAX_CHARS = 10_000

COUNCIL = ArticleIn(
    id="council-1",
    outlet="Town Herald",
    title="Council passes budget",
    body="The city council approved a budget of $4.2 million on Monday. "
    "The vote was 7 to 2 after a long debate. "
    "Mayor Jane Doe said the money will pay for three new schools. "
    "Opposition leader Tom Reed called the plan reckless.",
)
WIRE = ArticleIn(
    id="wire-1",
    outlet="City Wire",
    title="Budget approved",
    body="Councillors approved the $4.2 million budget late on Monday. "
    "Mayor Jane Doe promised three new schools. "
    "Tom Reed, who leads the opposition, voted against the plan.",
)


@pytest.fixture
def llm_settings() -> dict[str, Any]:
    """What ``make_llm`` (tests/conftest.py) builds every client of this module with."""
    return {"llm_max_attempts": MAX_ATTEMPTS, "llm_timeout_s": TIMEOUT_S}


# --- valid answers, computed from the prepared article -----------------------------------------


def prepared(article: ArticleIn = COUNCIL) -> PreparedArticle:
    return prepare(article, max_chars=MAX_CHARS)


def fact(n: int, article: ArticleIn = COUNCIL) -> dict[str, Any]:
    """A fact that passes verification: the claim is sentence n itself, citing sentence n."""
    return own_fact(article, n)


def facts(*numbers: int, article: ArticleIn = COUNCIL) -> dict[str, Any]:
    return {"facts": [fact(n, article) for n in numbers]}


def sentiment(article: ArticleIn = COUNCIL) -> dict[str, Any]:
    """Mixed overall (first and last sentence), Jane Doe positive in the sentence that names her."""
    sentences = prepared(article).sentences
    doe = next(s.n for s in sentences if "Jane Doe" in s.text)
    return {
        "overall": "mixed",
        "score": 0.1,
        "sentences": [1, len(sentences)],
        "entities": [{"entity": "Jane Doe", "label": "positive", "score": 0.5, "sentences": [doe]}],
    }


SENTIMENT = sentiment()


def digest_answer(*ids: str) -> dict[str, Any]:
    """Statements citing fact ids of the two articles; the text is the cited fact's own claim."""
    claims = {"A1.F1": fact(1)["claim"], "A1.F2": fact(2)["claim"], "A2.F1": fact(1, WIRE)["claim"]}
    statements = [{"text": claims.get(i, "The council approved the budget."), "facts": [i]} for i in ids]
    return {"headline": "Council approves $4.2 million budget", "statements": statements, "disagreements": []}


# --- the key-facts call fails in every way; the article's outcome ------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    script: Callable[[], list[Fault]]  # the answers to the key-facts call(s); sentiment then answers ok
    attempts: list[int]  # provenance.calls[].attempts of the key-facts prompt
    kept: list[int]  # the sentences cited by the facts kept, in order
    reasks: int = 0
    rejected: int = 0
    reask_says: str | None = None  # a phrase the re-ask shows the model
    outcomes: list[str] = field(default_factory=lambda: ["ok"])
    error: str | None = None  # provenance.error, when nothing usable came back
    repaired: dict[str, list[int]] = field(default_factory=dict)  # fact id -> the sentences the model had cited


INVENTED = {"claim": "The council approved a budget of $5.9 million.", "sentences": [1]}  # the article says 4.2
RATE_LIMITED = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}

ROWS = [
    # Retried inside one call: the answer arrives, attempts counts the failures.
    Row(
        "429-retry-after",
        lambda: [status(429, RATE_LIMITED, {"Retry-After": "0"}), ok(facts(1, 2, 3))],
        attempts=[2],
        kept=[1, 2, 3],
    ),
    # Retry-After is honoured only up to llm_retry_max_wait_s (0 here): 30 s asked, no wait.
    Row(
        "429-retry-after-capped",
        lambda: [status(429, RATE_LIMITED, {"Retry-After": "30"}), ok(facts(1, 2))],
        attempts=[2],
        kept=[1, 2],
    ),
    Row("429-no-retry-after", lambda: [status(429, RATE_LIMITED), ok(facts(1, 2))], attempts=[2], kept=[1, 2]),
    Row("500", lambda: [status(500), ok(facts(1, 2))], attempts=[2], kept=[1, 2]),
    Row("502-twice", lambda: [status(502), status(502), ok(facts(1, 2))], attempts=[3], kept=[1, 2]),
    Row("503", lambda: [status(503), ok(facts(1, 2))], attempts=[2], kept=[1, 2]),
    Row("read-timeout", lambda: [delay(2.0, ok(facts(4))), ok(facts(1, 2))], attempts=[2], kept=[1, 2]),
    Row("connection-reset", lambda: [reset(), ok(facts(1, 2))], attempts=[2], kept=[1, 2]),
    # An unusable answer: one re-ask (a second call), then the answer is used.
    Row(
        "malformed-json",
        lambda: [malformed(), ok(facts(1, 2))],
        attempts=[1, 1],
        kept=[1, 2],
        reasks=1,
        reask_says="the answer is not valid JSON",
        outcomes=["invalid", "ok"],
    ),
    Row(
        "json-not-an-object",
        lambda: [ok("[1, 2]"), ok(facts(1))],
        attempts=[1, 1],
        kept=[1],
        reasks=1,
        reask_says="not a JSON object",
        outcomes=["invalid", "ok"],
    ),
    Row(
        "schema-invalid-whole",
        lambda: [ok({"facts": "none"}), ok(facts(1, 2))],
        attempts=[1, 1],
        kept=[1, 2],
        reasks=1,
        reask_says='a JSON object with a "facts" list',
        outcomes=["ok", "ok"],
    ),
    # Two bad items (no citations; empty claim), one repaired on the re-ask: one still counts as rejected.
    Row(
        "schema-invalid-items",
        lambda: [ok({"facts": [fact(1), {"claim": fact(2)["claim"]}, {"claim": "", "sentences": [3]}]}), ok(facts(2))],
        attempts=[1, 1],
        kept=[1, 2],
        reasks=1,
        rejected=1,
        reask_says="fact 2.sentences: Field required",
        outcomes=["ok", "ok"],
    ),
    Row(
        "truncated",
        lambda: [length(), ok(facts(1, 2))],
        attempts=[1, 1],
        kept=[1, 2],
        reasks=1,
        reask_says="Give fewer, shorter items.",
        outcomes=["truncated", "ok"],
    ),
    Row(
        "refusal",
        lambda: [refusal(), ok(facts(1, 2))],
        attempts=[1, 1],
        kept=[1, 2],
        reasks=1,
        reask_says="the model refused",
        outcomes=["refused", "ok"],
    ),
    # A citation the article itself corrects is moved by the service, with no re-ask: the claim is
    # kept as written and the model's sentences are kept beside it.
    Row(
        "out-of-range-repaired",
        lambda: [ok({"facts": [fact(1), {"claim": fact(2)["claim"], "sentences": [99]}]})],
        attempts=[1],
        kept=[1, 2],
        repaired={"F2": [99]},
    ),
    Row(
        "neighbour-sentence-repaired",
        lambda: [ok({"facts": [{"claim": fact(2)["claim"], "sentences": [3]}, fact(4)]})],
        attempts=[1],
        kept=[2, 4],
        repaired={"F1": [3]},
    ),
    # Out of range and stated by no sentence: re-asked, and dropped when the model insists.
    Row(
        "out-of-range-unrepairable",
        lambda: [
            ok({"facts": [fact(1), {**INVENTED, "sentences": [0]}]}),
            ok({"facts": [{**INVENTED, "sentences": [42]}]}),
        ],
        attempts=[1, 1],
        kept=[1],
        reasks=1,
        rejected=1,
        reask_says="sentence 0 does not exist",
        outcomes=["ok", "ok"],
    ),
    Row(
        "invented-number-dropped",
        lambda: [ok({"facts": [fact(3), INVENTED]}), ok({"facts": [INVENTED]})],
        attempts=[1, 1],
        kept=[3],
        reasks=1,
        rejected=1,
        reask_says="the number(s) 5.9 do not appear",
        outcomes=["ok", "ok"],
    ),
    # Both kinds at once: a 500 retried inside the first call, then a re-ask for broken JSON.
    Row(
        "500-then-malformed",
        lambda: [status(500), malformed(), ok(facts(1, 2))],
        attempts=[2, 1],
        kept=[1, 2],
        reasks=1,
        reask_says="not valid JSON",
        outcomes=["invalid", "ok"],
    ),
    # Unusable twice: nothing is kept, the provenance says why, the article still has its sentiment.
    Row(
        "malformed-twice",
        lambda: [malformed(), length()],
        attempts=[1, 1],
        kept=[],
        reasks=1,
        reask_says="not valid JSON",
        outcomes=["invalid", "truncated"],
        error="no usable answer after a re-ask",
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
async def test_key_facts_fault(
    row: Row, fault_server: FaultServer, make_llm: Callable[..., LLMClient], prompts: dict[str, Prompt]
) -> None:
    article = prepared()
    script = row.script()
    fault_server.script([*script, ok(SENTIMENT)])

    started = time.monotonic()
    extraction = await extract_article(article, prompts, make_llm(), sequential=True)
    elapsed = time.monotonic() - started

    prov = extraction.provenance["key_facts"]
    assert [c.attempts for c in prov.calls] == row.attempts
    assert [c.outcome for c in prov.calls] == row.outcomes
    assert (prov.reasks, prov.rejected) == (row.reasks, row.rejected)
    assert len(prov.rejections) == prov.rejected
    assert [c.sentence for f in extraction.facts for c in f.citations] == row.kept
    assert [f.id for f in extraction.facts] == [f"F{i}" for i in range(1, len(row.kept) + 1)]
    assert {f.id: f.repaired_from for f in extraction.facts if f.repaired_from is not None} == row.repaired
    assert prov.repaired == len(row.repaired)
    assert (prov.error or "").startswith(row.error or "") and bool(prov.error) == bool(row.error)
    assert_traceable(extraction, article)
    # Sentiment is unaffected: one call, one attempt.
    assert [c.attempts for c in extraction.provenance["sentiment"].calls] == [1]
    assert extraction.sentiment is not None and extraction.sentiment.overall == "mixed"
    # Every HTTP attempt reached the server, and no more: the script is used up exactly.
    assert len(fault_server.completions) == sum(row.attempts) + 1 == len(script) + 1
    assert fault_server.remaining == 0
    facts_requests = [r.json for r in fault_server.completions if prompt_name(r.json) == "KeyFactsDraft"]
    if row.reask_says:
        first, last = facts_requests[0]["messages"], facts_requests[-1]["messages"]
        assert last[: len(first)] == first  # the re-ask extends the conversation, it does not rewrite it
        assert last[-1]["role"] == "user" and row.reask_says in last[-1]["content"]
        assert last[-1]["content"].rstrip().endswith("Fix the errors and try again.")
    else:
        assert all(r["messages"] == facts_requests[0]["messages"] for r in facts_requests)  # retries resend as is
    assert elapsed < 5.0  # zero waits from settings, Retry-After capped; only read timeouts cost time


async def test_the_reask_shows_the_model_its_broken_answer(
    fault_server: FaultServer, make_llm: Callable[..., LLMClient], prompts: dict[str, Prompt]
) -> None:
    fault_server.script([malformed(), ok(facts(1)), ok(SENTIMENT)])

    await extract_article(prepared(), prompts, make_llm(), sequential=True)

    reask = fault_server.completions[1].json["messages"]
    assert reask[-2] == {"role": "assistant", "content": MALFORMED_CONTENT}


# --- an endpoint that stays down: a typed error, attempts bounded by the settings ---------------


@dataclass(frozen=True)
class Down:
    id: str
    fault: Callable[[], Fault]
    error: type[LLMError]
    requests: int
    settings: dict[str, Any] = field(default_factory=dict)


DOWN = [
    Down("503", lambda: status(503), LLMHTTPError, MAX_ATTEMPTS),
    Down("500", lambda: status(500), LLMHTTPError, MAX_ATTEMPTS),
    Down("429", lambda: status(429, RATE_LIMITED, {"Retry-After": "0"}), LLMHTTPError, MAX_ATTEMPTS),
    Down("reset", reset, LLMUnavailable, MAX_ATTEMPTS),
    Down("read-timeout", lambda: delay(2.0), LLMUnavailable, MAX_ATTEMPTS),
    Down("five-attempts", lambda: status(502), LLMHTTPError, 5, {"llm_max_attempts": 5}),
    # The deadline stops retries too: one 0.5 s timeout is already past a 0.2 s deadline.
    Down("deadline", lambda: delay(2.0), LLMUnavailable, 1, {"llm_deadline_s": 0.2}),
    # Not worth retrying at all.
    Down("insufficient-quota", insufficient_quota, LLMHTTPError, 1),
    Down("401", lambda: status(401), LLMHTTPError, 1),
]


@pytest.mark.parametrize("down", DOWN, ids=[d.id for d in DOWN])
async def test_endpoint_that_stays_down(
    down: Down, fault_server: FaultServer, make_llm: Callable[..., LLMClient], prompts: dict[str, Prompt]
) -> None:
    fault_server.script([down.fault() for _ in range(down.requests + 2)] + [ok(facts(1)), ok(SENTIMENT)])

    with pytest.raises(LLMError) as caught:
        await extract_article(prepared(), prompts, make_llm(**down.settings), sequential=True)

    err = caught.value
    assert type(err) is down.error
    assert len(fault_server.completions) == down.requests  # bounded by settings, sentiment never asked
    assert err.usage is not None and err.usage.attempts == down.requests and err.usage.outcome == "error"
    problem = err.problem()
    assert problem["status"] in (502, 503) and problem["type"].startswith("https://newsdigest.dev/problems/llm-")
    assert json.loads(json.dumps(problem)) == problem  # serialisable as a problem+json body


async def test_a_failed_key_facts_call_leaves_no_coroutine_unawaited(
    fault_server: FaultServer, make_llm: Callable[..., LLMClient], prompts: dict[str, Prompt]
) -> None:
    """Regression: the sentiment coroutine was made up front and never awaited when key facts raised."""
    fault_server.script([status(401)])

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(LLMHTTPError):
            await extract_article(prepared(), prompts, make_llm(), sequential=True)
        gc.collect()

    assert [str(w.message) for w in seen if "never awaited" in str(w.message)] == []


async def test_nothing_listening_is_a_typed_error_after_bounded_attempts(
    make_llm: Callable[..., LLMClient], prompts: dict[str, Prompt]
) -> None:
    with pytest.raises(LLMUnavailable, match="cannot reach the model endpoint") as caught:
        await extract_article(prepared(), prompts, make_llm(closed_port_url()), sequential=True)

    assert caught.value.usage.attempts == MAX_ATTEMPTS
    assert caught.value.problem()["status"] == 503


# --- a story: faults in one article, and in the digest call -------------------------------------


def analysis(article: ArticleIn, *numbers: int) -> list[Fault]:
    return [ok(facts(*numbers, article=article)), ok(sentiment(article))]


@dataclass(frozen=True)
class StoryRow:
    id: str
    script: Callable[[], list[Fault]]
    requests: int
    statements: list[list[str]]  # fact ids cited by each published statement
    written_by: list[str]  # who worded each published statement
    digest_attempts: list[int]
    reasks: int = 0
    rejected: int = 0
    failed: list[str] = field(default_factory=list)  # article ids shown as failed sources
    error: str | None = None  # the digest's provenance.error: the model's answer was unusable
    model_headline: bool = True  # the model's headline is published (its facts are in published statements)


# The Herald's $4.2 million budget (A1.F1) and the Wire's (A2.F1) are one group of two outlets; the
# Herald's vote (A1.F2) is a group of its own. Whatever the model does, all three facts are published.
STORY_ROWS = [
    StoryRow(
        "all-ok",
        lambda: [*analysis(COUNCIL, 1, 2), *analysis(WIRE, 1), ok(digest_answer("A1.F1", "A2.F1"))],
        requests=5,
        # The Wire's own fact states the first statement, so it is cited there; the second statement
        # words nothing new and is dropped; the vote, which the model left out, is the service's.
        statements=[["A1.F1", "A2.F1"], ["A1.F2"]],
        written_by=["model", "service"],
        digest_attempts=[1],
    ),
    StoryRow(
        "digest-429-then-ok",
        lambda: [
            *analysis(COUNCIL, 1, 2),
            *analysis(WIRE, 1),
            status(429, RATE_LIMITED),
            ok(digest_answer("A1.F1", "A2.F1")),
        ],
        requests=6,
        statements=[["A1.F1", "A2.F1"], ["A1.F2"]],
        written_by=["model", "service"],
        digest_attempts=[2],
    ),
    StoryRow(
        "digest-timeout-then-ok",
        lambda: [*analysis(COUNCIL, 1, 2), *analysis(WIRE, 1), delay(2.0), ok(digest_answer("A1.F1"))],
        requests=6,
        statements=[["A1.F1", "A2.F1"], ["A1.F2"]],
        written_by=["model", "service"],
        digest_attempts=[2],
    ),
    StoryRow(
        "digest-malformed-reasked",
        lambda: [*analysis(COUNCIL, 1, 2), *analysis(WIRE, 1), malformed(), ok(digest_answer("A1.F2", "A2.F1"))],
        requests=6,
        # In the service's order (the two-outlet group first), not the model's.
        statements=[["A2.F1", "A1.F1"], ["A1.F2"]],
        written_by=["model", "model"],
        digest_attempts=[1, 1],
        reasks=1,
    ),
    # One statement of two cites an unknown id: it is replaced by the facts it was to word, no re-ask.
    StoryRow(
        "digest-unknown-fact-id",
        lambda: [*analysis(COUNCIL, 1, 2), *analysis(WIRE, 1), ok(digest_answer("A1.F1", "A9.F9"))],
        requests=5,
        statements=[["A1.F1", "A2.F1"], ["A1.F2"]],
        written_by=["model", "service"],
        digest_attempts=[1],
        rejected=1,
    ),
    # Every statement wrong: re-asked once; the second answer's one bad statement is counted.
    StoryRow(
        "digest-mostly-unknown-ids-reasked",
        lambda: [
            *analysis(COUNCIL, 1, 2),
            *analysis(WIRE, 1),
            ok(digest_answer("A9.F9", "A2.F7")),
            ok(digest_answer("A1.F1", "A2.F7")),
        ],
        requests=6,
        statements=[["A1.F1", "A2.F1"], ["A1.F2"]],
        written_by=["model", "service"],
        digest_attempts=[1, 1],
        reasks=1,
        rejected=1,
    ),
    # Unusable twice: the service publishes every verified fact itself and says why.
    StoryRow(
        "digest-unusable-twice",
        lambda: [*analysis(COUNCIL, 1, 2), *analysis(WIRE, 1), malformed(), refusal()],
        requests=6,
        statements=[["A1.F1", "A2.F1"], ["A1.F2"]],
        written_by=["service", "service"],
        digest_attempts=[1, 1],
        reasks=1,
        error="no usable digest after a re-ask",
        model_headline=False,
    ),
    # One article's endpoint stays down: it is a failed source, the story is digested without it.
    StoryRow(
        "one-article-down",
        lambda: [*analysis(COUNCIL, 1, 2), *[status(503)] * MAX_ATTEMPTS, ok(digest_answer("A1.F1", "A1.F2"))],
        requests=2 + MAX_ATTEMPTS + 1,
        statements=[["A1.F1"], ["A1.F2"]],
        written_by=["model", "model"],
        digest_attempts=[1],
        failed=["wire-1"],
    ),
]


@pytest.mark.parametrize("row", STORY_ROWS, ids=[r.id for r in STORY_ROWS])
async def test_story_fault(
    row: StoryRow, fault_server: FaultServer, make_llm: Callable[..., LLMClient], prompts: dict[str, Prompt]
) -> None:
    fault_server.script(row.script())

    digest = await story([COUNCIL, WIRE], prompts, make_llm(), max_chars=MAX_CHARS, story_id="budget")

    assert [[c.fact_id for c in st.citations] for st in digest.statements] == row.statements
    assert [st.written_by for st in digest.statements] == row.written_by
    assert digest.also_reported == []
    assert digest.provenance is not None
    assert [c.attempts for c in digest.provenance.calls] == row.digest_attempts
    assert (digest.provenance.reasks, digest.provenance.rejected) == (row.reasks, row.rejected)
    assert (digest.provenance.error or "").startswith(row.error or "")
    assert bool(digest.provenance.error) == bool(row.error)
    model_headline = "Council approves $4.2 million budget"
    assert digest.headline == (model_headline if row.model_headline else digest.statements[0].text)
    assert [s.article_id for s in digest.sources if s.status == "failed"] == row.failed
    assert all(s.error for s in digest.sources if s.status == "failed")
    assert len(fault_server.completions) == row.requests
    assert fault_server.remaining == 0
    assert_digest_traceable(digest, [COUNCIL, WIRE])


async def test_digest_endpoint_down_is_a_typed_error(
    fault_server: FaultServer, make_llm: Callable[..., LLMClient], prompts: dict[str, Prompt]
) -> None:
    fault_server.script([*analysis(COUNCIL, 1), *analysis(WIRE, 1), *[reset()] * (MAX_ATTEMPTS + 1)])

    with pytest.raises(LLMUnavailable):
        await story([COUNCIL, WIRE], prompts, make_llm(), max_chars=MAX_CHARS)

    assert len(fault_server.completions) == 4 + MAX_ATTEMPTS


# --- the model's or the endpoint's failure is never reported as the caller's (InputError, 422) ---


async def test_a_digest_answer_unusable_twice_is_the_models_fault_and_loses_no_fact(
    fault_server: FaultServer, make_llm: Callable[..., LLMClient], prompts: dict[str, Prompt]
) -> None:
    fault_server.script([*analysis(COUNCIL, 1, 2), *analysis(WIRE, 1), malformed(), malformed()])

    digest = await story([COUNCIL, WIRE], prompts, make_llm(), max_chars=MAX_CHARS)

    assert digest.provenance is not None and digest.provenance.error is not None
    ref = prompts["digest"].ref
    assert digest.provenance.error == f"no usable digest after a re-ask: {ref}: the answer is not valid JSON."
    # Nothing is refused as the caller's: both sources are used, every verified fact published verbatim.
    assert [s.status for s in digest.sources] == ["used", "used"]
    assert [(st.written_by, st.text) for st in digest.statements] == [
        ("service", fact(1)["claim"]),
        ("service", fact(2)["claim"]),
    ]


async def test_story_with_endpoint_down_everywhere_is_an_llm_error(
    fault_server: FaultServer, make_llm: Callable[..., LLMClient], prompts: dict[str, Prompt]
) -> None:
    fault_server.script([status(503)] * (2 * MAX_ATTEMPTS))

    with pytest.raises(LLMError):
        await story([COUNCIL, WIRE], prompts, make_llm(), max_chars=MAX_CHARS, sequential=True)
