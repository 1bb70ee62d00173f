"""What tests build: articles, prepared articles, schema objects for the store, and valid model answers.

The answers are computed from the prepared text: a fact's claim is the very sentence it cites,
sentiment is neutral citing sentence 1, and a digest statement repeats the claim of the fact it
cites, so every answer passes verification. They are played by the fault server (tests/fake_openai.py).
``assert_traceable`` and ``assert_digest_traceable`` check what any answer, valid or hostile, came to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas import (
    ArticleIn,
    ArticleRef,
    CallUsage,
    Citation,
    Digest,
    Extraction,
    Fact,
    PreparedArticle,
    PromptProvenance,
    Sentence,
    SentenceQuote,
    Source,
    Statement,
)
from service.article_files import load_article
from service.llm.port import Completer
from service.pipeline.story import StoryOptions, digest_story, prepare_all
from service.pipeline.text import prepare
from service.prompts import Prompt
from tests.fake_openai import Fault, ok

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "articles").glob("*.json"))
EXAMPLE_IDS = [p.stem.split("-")[0] for p in EXAMPLES]


# --- articles -------------------------------------------------------------------------------------------


def example(stem_prefix: str) -> ArticleIn:
    return load_article(next(p for p in EXAMPLES if p.stem.startswith(stem_prefix)))


def article(n: int, *, story_id: str | None = "council-budget", outlet: str | None = None, cms_id: str | None = None,
            extra: str = "") -> dict[str, Any]:
    """An ArticleIn as JSON: three short sentences, distinct per ``n``."""
    body = (f"The council of Town{n} approved a budget of {n} million euros on Monday. "
            f"The mayor of Town{n} said schools get most of the money. "
            f"Critics in Town{n} called the plan rushed.{extra}")
    return {"id": cms_id or f"cms-{n}", "story_id": story_id, "outlet": outlet or f"Outlet {n}",
            "title": f"Town{n} budget", "body": body, "language": "en"}


def prepared(text: str, outlet: str = "Test Outlet", title: str = "A test") -> PreparedArticle:
    return prepare(ArticleIn(outlet=outlet, title=title, body=text), max_chars=100_000)


async def story(
    articles: list[ArticleIn], prompts: dict[str, Prompt], llm: Completer, *, max_chars: int,
    sequential: bool = True, story_id: str | None = None,
) -> Digest:
    """A story's digest as the CLI builds it: prepared (too large or empty -> failed sources), then digested."""
    ready, failed = prepare_all(articles, max_chars=max_chars)
    return await digest_story(ready, prompts, llm, StoryOptions(sequential=sequential, story_id=story_id),
                              failed=failed)


# --- valid model answers -------------------------------------------------------------------------------


def own_fact(article: ArticleIn | dict[str, Any], n: int) -> dict[str, Any]:
    """A fact that passes verification: the claim is sentence ``n`` itself, citing sentence ``n``."""
    given = article if isinstance(article, ArticleIn) else ArticleIn.model_validate(article)
    return {"claim": prepare(given, max_chars=100_000).sentence(n).text, "sentences": [n]}


def facts_answer(payload: dict[str, Any], count: int = 2) -> dict[str, Any]:
    return {"facts": [own_fact(payload, n) for n in range(1, count + 1)]}


def neutral(n: int = 1) -> dict[str, Any]:
    """A sentiment answer: neutral, citing sentence ``n``."""
    return {"overall": "neutral", "score": 0.0, "sentences": [n], "entities": []}


def analysis(payload: dict[str, Any]) -> list[Fault]:
    """The two answers one article's analysis needs: key facts first, then sentiment."""
    return [ok(facts_answer(payload)), ok(neutral())]


def digest_answer(payloads: list[dict[str, Any]]) -> Fault:
    """A digest citing the first fact of each article, in the order the job lists them."""
    statements = [{"text": own_fact(payload, 1)["claim"], "facts": [f"A{n}.F1"]}
                  for n, payload in enumerate(payloads, 1)]
    return ok({"headline": statements[0]["text"], "statements": statements, "disagreements": []})


def assert_traceable(extraction: Extraction, article: PreparedArticle) -> None:
    """Every fact cites something, every quote is the journalist's sentence it names, and the result
    survives a JSON round trip."""
    text = {s.n: s.text for s in article.sentences}
    for f in extraction.facts:
        assert f.citations, f
        for c in f.citations:
            assert c.quote == text[c.sentence], f
    if extraction.sentiment:
        for c in extraction.sentiment.citations + [c for e in extraction.sentiment.entities for c in e.citations]:
            assert c.quote == text[c.sentence]
    assert Extraction.model_validate_json(extraction.model_dump_json()) == extraction


def assert_digest_traceable(digest: Digest, articles: Iterable[ArticleIn]) -> None:
    """Every statement cites something, and every quote of a statement or a disagreement is the
    sentence it names of the article it names; the digest survives a JSON round trip."""
    by_id = {a.id: prepare(a, max_chars=100_000) for a in articles}
    for statement in digest.statements:
        assert statement.citations, statement
    cited = [c for st in digest.statements for c in st.citations]
    cited += [c for d in digest.disagreements for p in d.positions for c in p.citations]
    for c in cited:
        assert c.article_id is not None and c.quote == by_id[c.article_id].sentence(c.sentence).text, c
    assert Digest.model_validate_json(digest.model_dump_json()) == digest


# --- schema objects for the store, without running the pipeline ---------------------------------------


def prepared_article(
    *sentences: str,
    outlet: str = "Observer",
    cms_id: str | None = None,
    story_id: str | None = None,
    published_at: datetime | None = datetime(2025, 3, 1, 9, 30, tzinfo=UTC),
) -> PreparedArticle:
    sentences = sentences or ("The council approved the budget on Monday.", "It spends 12 million euros on schools.")
    numbered, start = [], 0
    for n, sentence in enumerate(sentences, start=1):
        numbered.append(Sentence(n=n, text=sentence, start=start, end=start + len(sentence)))
        start += len(sentence) + 1
    text = " ".join(sentences)
    return PreparedArticle(
        outlet=outlet,
        title=f"{outlet}: budget",
        url=f"https://{outlet.lower()}.example/budget",
        published_at=published_at,
        language="en",
        story_id=story_id,
        cms_id=cms_id,
        text=text,
        sentences=tuple(numbered),
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
    )


def call_usage(prompt: str = "key_facts@1", **overrides: object) -> CallUsage:
    values: dict[str, object] = {
        "prompt": prompt, "prompt_hash": "ab" * 32, "model": "gpt-4o-mini", "resolved_model": "gpt-4o-mini-2024",
        "mode": "json_schema", "input_tokens": 900, "output_tokens": 120, "cached_tokens": 512,
        "latency_ms": 1400, "attempts": 2, "finish_reason": "stop",
    }
    values.update(overrides)
    return CallUsage.model_validate(values)


def extraction(ref: ArticleRef) -> Extraction:
    return Extraction(
        article=ref,
        facts=[Fact(id="F1", claim="The council approved the budget.",
                    citations=[SentenceQuote(sentence=1, quote="The council approved the budget on Monday.")])],
        provenance={"key_facts": PromptProvenance(prompt="key_facts@1", prompt_hash="ab" * 32, model="gpt-4o-mini",
                                                  mode="json_schema", calls=[call_usage()])},
    )


def digest(headline: str = "Council passes budget", story_id: str | None = "story-1") -> Digest:
    citation = Citation(fact_id="A1.F1", article_id="a1", outlet="Observer", sentence=1,
                        quote="The council approved the budget on Monday.")
    return Digest(
        story_id=story_id,
        headline=headline,
        statements=[Statement(text="The council approved the budget.", citations=[citation], outlets=1)],
        sources=[Source(article_id="a1", outlet="Observer", title="Observer: budget", facts=1)],
    )
