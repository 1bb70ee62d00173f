"""Small builders for store tests: valid schema objects without running the pipeline."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from schemas import (
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
