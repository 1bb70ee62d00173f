"""Render stage: Markdown footnotes, HTML escaping and links, extraction Markdown, and a real browser."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from schemas import (
    ArticleRef,
    CallUsage,
    Citation,
    Digest,
    Disagreement,
    EntitySentiment,
    EntitySentimentSummary,
    Extraction,
    Fact,
    OutletSentiment,
    Position,
    PromptProvenance,
    Rejection,
    SentenceQuote,
    Sentiment,
    Source,
    Statement,
    StorySentiment,
    Usage,
)
from service.pipeline.render import digest_html, digest_json, digest_markdown, extraction_markdown, md_escape
from tests import factories

CHROMIUM = Path("/usr/bin/chromium")
EVIL = "<script>alert(1)</script> [click me](javascript:alert(1))"
D13 = datetime(2025, 6, 13, 9, 30, tzinfo=UTC)
D12 = datetime(2025, 6, 12, 18, 0, tzinfo=UTC)

Q_BUDGET_HT = "The council approved the budget on Tuesday by seven votes to two."
Q_BUDGET_CW = "Councillors voted 7-2 on Tuesday to pass the city budget."
Q_BRIDGE = "Repairs to the Old Mill bridge will start in September."
Q_EVIL = f"A protester shouted {EVIL} outside the hall."
Q_COST_HT = "The repairs are expected to cost 4.2 million euros."
Q_COST_LG = "Engineers put the bill at closer to 6 million euros."


def cite(fact_id: str, outlet: str, when: datetime, sentence: int, quote: str) -> Citation:
    slug = outlet.lower().replace(" ", "-")
    return Citation(fact_id=fact_id, article_id=slug, outlet=outlet, published_at=when,
                    url=f"https://{slug}.example/story", sentence=sentence, quote=quote)


def make_digest(*, disagreements: bool = True) -> Digest:
    ht_budget = cite("A1.F1", "Harbor Times", D13, 4, Q_BUDGET_HT)
    statements = [
        Statement(text="The city council passed the budget on Tuesday by 7 votes to 2.",
                  citations=[ht_budget, cite("A2.F1", "Coastal Wire", D13, 2, Q_BUDGET_CW)], outlets=2),
        Statement(text="Bridge repairs begin in September.",
                  citations=[cite("A1.F3", "Harbor Times", D13, 7, Q_BRIDGE)], outlets=1),
        Statement(text="Protesters gathered outside the hall.",
                  citations=[cite("A3.F2", "The Ledger", D12, 3, Q_EVIL)], outlets=1),
        Statement(text="The vote was on Tuesday.", citations=[ht_budget], outlets=1),
    ]
    dis = [Disagreement(topic="Cost of the bridge repairs", positions=[
        Position(says="About 4.2 million euros.", outlets=["Harbor Times"],
                 citations=[cite("A1.F5", "Harbor Times", D13, 9, Q_COST_HT)]),
        Position(says="Closer to 6 million euros.", outlets=["The Ledger"],
                 citations=[cite("A3.F4", "The Ledger", D12, 11, Q_COST_LG)]),
    ])]
    sources = [
        Source(article_id="harbor-times", outlet="Harbor Times", title="Council passes budget",
               url="https://harbor-times.example/story", published_at=D13, facts=6),
        Source(article_id="coastal-wire", outlet="Coastal Wire", title="Budget vote: 7-2",
               url="https://coastal-wire.example/story", published_at=D13, facts=3),
        Source(article_id="the-ledger", outlet="The Ledger", title=f"Anger at the hall {EVIL}",
               url="javascript:alert(1)", published_at=D12, facts=4),
        Source(outlet="Harbor Times", title="Council passes budget (copy)", status="duplicate",
               error="same text as harbor-times"),
        Source(outlet="Gazette", title="", url="https://gazette.example/x", status="failed",
               error="model returned invalid JSON twice"),
    ]
    sentiment = StorySentiment(
        overall="mixed", score=-0.1,
        by_outlet=[OutletSentiment(outlet="Harbor Times", label="positive", score=0.3),
                   OutletSentiment(outlet="The Ledger", label="negative", score=-0.55)],
        entities=[EntitySentimentSummary(entity="City council", label="mixed", score=-0.05, outlets=3)],
    )
    return Digest(story_id="budget-2025", headline="Council passes budget; bridge cost disputed",
                  statements=statements, disagreements=dis if disagreements else [],
                  sentiment=sentiment, sources=sources, created_at=datetime(2025, 6, 14, 8, 0, tzinfo=UTC))


EVIL_MD = r"\<script\>alert(1)\</script\> \[click me\](javascript:alert(1))"


def test_markdown_statements_and_footnotes_exact() -> None:
    md = digest_markdown(make_digest())
    lines = md.splitlines()
    assert lines[0] == "# Council passes budget; bridge cost disputed"
    assert "- The city council passed the budget on Tuesday by 7 votes to 2.[^1][^2] (2 outlets)" in lines
    assert "- Bridge repairs begin in September.[^3] (1 outlet)" in lines
    assert "- The vote was on Tuesday.[^1] (1 outlet)" in lines  # the same sentence keeps its number
    assert f"[^1]: Harbor Times, 2025-06-13 — “{Q_BUDGET_HT}” (sentence 4)" in lines
    assert f"[^2]: Coastal Wire, 2025-06-13 — “{Q_BUDGET_CW}” (sentence 2)" in lines
    assert f"[^4]: The Ledger, 2025-06-12 — “A protester shouted {EVIL_MD} outside the hall.” (sentence 3)" in lines
    assert f"[^6]: The Ledger, 2025-06-12 — “{Q_COST_LG}” (sentence 11)" in lines
    assert sum(line.startswith("[^") for line in lines) == 6


def test_markdown_disagreements_sentiment_sources() -> None:
    md = digest_markdown(make_digest())
    assert "## Sources disagree\n\n### Cost of the bridge repairs\n\n" in md
    assert "- About 4.2 million euros. — Harbor Times (2025-06-13)[^5]" in md
    assert "- Closer to 6 million euros. — The Ledger (2025-06-12)[^6]" in md
    assert "Overall: **mixed** (-0.10)" in md
    assert "- The Ledger: negative (-0.55)" in md
    assert "- City council: mixed (-0.05, 3 outlets)" in md
    assert ("- Harbor Times — [Council passes budget](https://harbor-times.example/story) — 2025-06-13"
            " — used, 6 facts") in md
    assert "- Harbor Times — Council passes budget (copy) — undated — duplicate: same text as harbor-times" in md
    assert ("- Gazette — [https://gazette.example/x](https://gazette.example/x) — undated"
            " — failed: model returned invalid JSON twice") in md
    assert f"- The Ledger — Anger at the hall {EVIL_MD} — 2025-06-12 — used, 4 facts" in md


def test_markdown_never_carries_markup_from_articles() -> None:
    commonmark = MarkdownIt("commonmark")  # passes raw HTML through, as many Markdown viewers do
    assert "<script>" in commonmark.render(EVIL)  # the control: unescaped, the payload would run
    for md in (digest_markdown(make_digest()), extraction_markdown(make_extraction())):
        html = commonmark.render(md)
        assert "<script" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "[click me](javascript:alert(1))" in html  # shown as text, not as a link
        hrefs = re.findall(r'href="([^"]*)"', html)
        assert hrefs and all(href.startswith("https://") for href in hrefs), hrefs


def test_markdown_without_disagreements_has_no_section() -> None:
    md = digest_markdown(make_digest(disagreements=False))
    assert "Sources disagree" not in md
    assert "[^5]" not in md  # only the statements' footnotes remain


def test_markdown_without_quotes() -> None:
    md = digest_markdown(make_digest(), quotes=False)
    assert "[^1]: Harbor Times, 2025-06-13 — (sentence 4)" in md.splitlines()
    assert Q_BUDGET_HT not in md


def test_md_escape_folds_lines_and_block_markers() -> None:
    assert md_escape("line one\n\n# Heading\n- item") == r"line one \# Heading - item"
    assert md_escape("- starts a list") == r"\- starts a list"
    assert md_escape("1. starts a numbered list") == r"1\. starts a numbered list"
    assert md_escape("a_b *c* `d` &amp; | ~") == r"a\_b \*c\* \`d\` \&amp; \| \~"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.scripts += tag == "script"
        if tag == "a" and found.get("href") is not None:
            self.hrefs.append(found["href"] or "")
        if found.get("id"):
            self.ids.add(found["id"] or "")


def test_html_escapes_article_text_and_links_only_http() -> None:
    page = digest_html(make_digest())
    assert page.startswith("<!DOCTYPE html>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in page
    parsed = _Links()
    parsed.feed(page)
    assert parsed.scripts == 0
    assert parsed.hrefs
    for href in parsed.hrefs:
        assert not href.strip().lower().startswith("javascript:")
        assert href.startswith(("#", "http://", "https://")), href
    for href in parsed.hrefs:  # every footnote link and back link lands on an element
        if href.startswith("#"):
            assert href[1:] in parsed.ids, href
    assert {"statements", "disagreements", "footnotes", "sources"} <= parsed.ids
    assert {"fn-1", "fn-6"} <= parsed.ids and "fn-7" not in parsed.ids
    assert 'class="disagreements"' in page
    assert "2025-06-12" in page and "2025-06-13" in page


def test_html_shows_each_quote_with_its_footnote() -> None:
    page = digest_html(make_digest())
    assert page.count(f"<q>{Q_BUDGET_HT}</q>") == 3  # twice on hover (two statements) + the footnote list
    assert 'href="#fn-1"' in page and 'id="fn-1"' in page
    assert re.search(r'<li id="fn-1" value="1">.*?href="#ref-1-1".*?href="#ref-1-2"', page)


def test_html_without_disagreements() -> None:
    page = digest_html(make_digest(disagreements=False))
    assert 'id="disagreements"' not in page
    assert 'id="footnotes"' in page


def test_json_round_trips() -> None:
    digest = make_digest()
    text = digest_json(digest)
    assert text.startswith("{\n  ")
    assert Digest.model_validate_json(text) == digest


def test_minimal_digest_renders_optional_parts() -> None:
    prov = PromptProvenance(prompt="digest@1", prompt_hash="ef56", model="gpt-x", mode="json_schema",
                            calls=[CallUsage(prompt="digest@1", prompt_hash="ef56", model="gpt-x", mode="json_schema",
                                             input_tokens=900, output_tokens=120, latency_ms=2500)])
    url = "https://example.org/a (b)"
    digest = Digest(headline="- 1. not a list", provenance=prov, sources=[Source(outlet="Wire", title="", url=url)],
                    statements=[Statement(text="Only one.", outlets=1, citations=[
                        Citation(fact_id="A1.F1", outlet="Wire", url=url, sentence=1, quote="Only one.")])])
    md = digest_markdown(digest)
    assert md.startswith(r"# \- 1. not a list" + "\n")
    assert "[^1]: Wire, undated — “Only one.” (sentence 1)" in md
    assert "[https://example.org/a (b)](https://example.org/a%20%28b%29)" in md
    assert "## Sentiment\n\nNot available." in md
    assert "digest@1 · model gpt-x (json\\_schema) · 1 call · 900 tokens in / 120 out · 2.5 s" in md
    page = digest_html(digest)
    assert 'href="https://example.org/a (b)"' in page
    assert "Not available." in page and "digest@1 · model gpt-x (json_schema)" in page


def make_extraction() -> Extraction:
    q = {4: Q_BUDGET_HT, 7: Q_BRIDGE, 9: Q_COST_HT, 3: Q_EVIL}
    calls = [CallUsage(prompt="key_facts@2", prompt_hash="ab12", model="qwen2.5-coder-1.5b", mode="json_object",
                       input_tokens=1200, output_tokens=310, latency_ms=14200),
             CallUsage(prompt="key_facts@2", prompt_hash="ab12", model="qwen2.5-coder-1.5b", mode="json_object",
                       input_tokens=1350, output_tokens=280, latency_ms=12100)]
    rejected = [Rejection(item="Costs rose 9%", reasons=["9% not in sentence 9"])]
    return Extraction(
        article=ArticleRef(article_id="harbor-times", outlet="Harbor Times", title="Council passes budget",
                           url="https://harbor-times.example/story", published_at=D13, content_hash="0" * 64,
                           sentence_count=12),
        facts=[Fact(id="F1", claim="The council approved the budget on Tuesday, 7-2.",
                    citations=[SentenceQuote(sentence=4, quote=q[4])]),
               Fact(id="F2", claim="Repairs will cost 4.2 million euros and start in September.",
                    citations=[SentenceQuote(sentence=7, quote=q[7]), SentenceQuote(sentence=9, quote=q[9])])],
        sentiment=Sentiment(overall="neutral", score=0.05, citations=[SentenceQuote(sentence=4, quote=q[4])],
                            entities=[EntitySentiment(entity="Protesters", label="negative", score=-0.4,
                                                      citations=[SentenceQuote(sentence=3, quote=q[3])])]),
        provenance={
            "key_facts": PromptProvenance(prompt="key_facts@2", prompt_hash="ab12", model="qwen2.5-coder-1.5b",
                                          mode="json_object", calls=calls, reasks=1, rejected=1,
                                          rejections=rejected),
            "sentiment": PromptProvenance(prompt="sentiment@1", prompt_hash="cd34", model="qwen2.5-coder-1.5b",
                                          mode="json_object", calls=[]),
        },
    )


def test_extraction_markdown_quotes_and_provenance() -> None:
    md = extraction_markdown(make_extraction())
    lines = md.splitlines()
    assert lines[0] == "# Council passes budget"
    assert "Harbor Times · 2025-06-13 · 12 sentences · [source](https://harbor-times.example/story)" in lines
    assert "- **F2** Repairs will cost 4.2 million euros and start in September." in lines
    for sentence, quote in [(4, Q_BUDGET_HT), (7, Q_BRIDGE), (9, Q_COST_HT)]:
        assert f"  - “{quote}” (sentence {sentence})" in lines
    assert f"  - “A protester shouted {EVIL_MD} outside the hall.” (sentence 3)" in lines
    assert "Overall: **neutral** (+0.05)" in lines
    assert "- **Protesters**: negative (-0.40)" in lines
    assert (r"- key\_facts@2 · model qwen2.5-coder-1.5b (json\_object) · 2 calls · 2,550 tokens in / 590 out"
            " · 26.3 s · 1 re-ask · 1 rejected") in lines
    assert r"  - rejected: Costs rose 9% — 9% not in sentence 9" in lines
    assert r"- sentiment@1 · model qwen2.5-coder-1.5b (json\_object) · 0 calls · 0 tokens in / 0 out" \
           " · 0.0 s · 0 re-asks · 0 rejected" in lines


# --- The editor sees it all: outlets and wording, "also reported", sides, sources' facts and rejections ---

Q_COPY = Q_BUDGET_HT  # Bay Echo repeats Harbor Times word for word
Q_COST_CW = "City officials put the cost at 5 million euros."
CLAIM_BRIDGE = "Repairs to the Old Mill bridge will start in September."
CLAIM_COST = "Repairs will cost 4.2 million euros and start in September."


def make_audit_digest() -> Digest:
    """A digest with every part the editor audits: copies, both wordings, "also reported", three sides."""
    statements = [
        Statement(text="The city council passed the budget on Tuesday by 7 votes to 2.", outlets=2,
                  written_by="model", citations=[cite("A1.F1", "Harbor Times", D13, 4, Q_BUDGET_HT),
                                                 cite("A2.F1", "Coastal Wire", D13, 2, Q_BUDGET_CW),
                                                 cite("A4.F1", "Bay Echo", D13, 4, Q_COPY)]),
        Statement(text=CLAIM_BRIDGE, outlets=1, written_by="service",
                  citations=[cite("A1.F2", "Harbor Times", D13, 7, Q_BRIDGE)]),
    ]
    also = [Statement(text=f"A protester shouted {EVIL}.", outlets=1, written_by="service",
                      citations=[cite("A3.F1", "The Ledger", D12, 3, Q_EVIL)])]
    sides = Disagreement(topic="Bridge: amount (cost)", kind="amount", written_by="service", positions=[
        Position(says="4.2 million euros", outlets=["Harbor Times"],
                 citations=[cite("A1.F2", "Harbor Times", D13, 9, Q_COST_HT)]),
        Position(says="6 million euros", outlets=["The Ledger"],
                 citations=[cite("A3.S11", "The Ledger", D12, 11, Q_COST_LG)]),
        Position(says="5 million euros", outlets=["Coastal Wire"],
                 citations=[cite("A2.S5", "Coastal Wire", D13, 5, Q_COST_CW)]),
    ])
    sources = [
        Source(article_id="harbor-times", outlet="Harbor Times", title="Council passes budget",
               url="https://harbor-times.example/story", published_at=D13, facts=2,
               verified=[Fact(id="F1", claim="The council approved the budget on Tuesday, 7-2.",
                              citations=[SentenceQuote(sentence=4, quote=Q_BUDGET_HT)]),
                         Fact(id="F2", claim=CLAIM_COST, repaired_from=[5, 6],
                              citations=[SentenceQuote(sentence=7, quote=Q_BRIDGE),
                                         SentenceQuote(sentence=9, quote=Q_COST_HT)])],
               rejected=[Rejection(item="Costs rose 9%", reasons=["9% not in sentence 9"])]),
        Source(article_id="coastal-wire", outlet="Coastal Wire", title="Budget vote: 7-2",
               url="https://coastal-wire.example/story", published_at=D13, facts=1,
               verified=[Fact(id="F1", claim="Councillors passed the budget 7-2.", repaired_from=[1],
                              citations=[SentenceQuote(sentence=2, quote=Q_BUDGET_CW)])]),
        Source(article_id="the-ledger", outlet="The Ledger", title="Anger at the hall", published_at=D12, facts=1,
               url="https://the-ledger.example/story",
               verified=[Fact(id="F1", claim=f"A protester shouted {EVIL}.",
                              citations=[SentenceQuote(sentence=3, quote=Q_EVIL)])]),
        Source(article_id="bay-echo", outlet="Bay Echo", title="Budget passed", url="https://bay-echo.example/story",
               published_at=D13, facts=1, copy_of="Harbor Times",
               verified=[Fact(id="F1", claim="The council approved the budget on Tuesday, 7-2.",
                              citations=[SentenceQuote(sentence=4, quote=Q_COPY)])]),
        Source(outlet="Gazette", title="Budget row", status="failed", error="no verified fact",
               rejected=[Rejection(item=EVIL, reasons=["sentence 14 does not exist", "no <b>number</b> in it"]),
                         Rejection(item="Turnout was 40%", reasons=["40% not in sentence 2"])]),
    ]
    prov = PromptProvenance(prompt="digest@3", prompt_hash="ef56", model="gpt-x", mode="json_schema", rejected=1,
                            rejections=[Rejection(item="The council cut the budget by half.",
                                                  reasons=["statement 3: half not in the cited sentences"])])
    return Digest(story_id="budget-2025", headline="Council passes budget; bridge cost disputed",
                  statements=statements, also_reported=also, disagreements=[sides], sources=sources,
                  provenance=prov, created_at=datetime(2025, 6, 14, 8, 0, tzinfo=UTC))


def test_markdown_statements_name_their_outlets_and_who_worded_them() -> None:
    lines = digest_markdown(make_audit_digest()).splitlines()
    first = lines.index("- The city council passed the budget on Tuesday by 7 votes to 2.[^1][^2][^3] (2 outlets)")
    assert lines[first + 1] == "  - Harbor Times, Coastal Wire, Bay Echo (copy of Harbor Times) · worded by the model"
    assert lines[first + 2] == f"- {CLAIM_BRIDGE}[^4] (1 outlet)"
    assert lines[first + 3] == "  - Harbor Times · claim as written"
    assert f"[^3]: Bay Echo, 2025-06-13 — “{Q_COPY}” (sentence 4)" in lines
    assert f"[^4]: Harbor Times, 2025-06-13 — “{Q_BRIDGE}” (sentence 7)" in lines


def test_markdown_also_reported_is_cited_like_the_statements() -> None:
    md = digest_markdown(make_audit_digest())
    assert ("\n  - Harbor Times · claim as written\n\n## Also reported\n\n"
            f"- A protester shouted {EVIL_MD}.[^5] (1 outlet)\n"
            "  - The Ledger · claim as written\n\n## Sources disagree\n") in md
    assert f"[^5]: The Ledger, 2025-06-12 — “A protester shouted {EVIL_MD} outside the hall.” (sentence 3)" in md
    assert "## Also reported" not in digest_markdown(make_digest())


def test_markdown_disagreement_one_block_per_side_with_kind_and_quotes() -> None:
    md = digest_markdown(make_audit_digest())
    assert ("### Bridge: amount (cost)\n\n"
            "Kind: amount. Found by the service in the outlets' own sentences.\n\n"
            "- 4\\.2 million euros — Harbor Times (2025-06-13)[^6]\n"  # md_escape guards a leading "4."
            f"  - “{Q_COST_HT}” (Harbor Times, sentence 9)\n"
            "- 6 million euros — The Ledger (2025-06-12)[^7]\n"
            f"  - “{Q_COST_LG}” (The Ledger, sentence 11)\n"
            "- 5 million euros — Coastal Wire (2025-06-13)[^8]\n"
            f"  - “{Q_COST_CW}” (Coastal Wire, sentence 5)\n\n## Sentiment\n") in md
    assert f"[^8]: Coastal Wire, 2025-06-13 — “{Q_COST_CW}” (sentence 5)" in md
    plain = digest_markdown(make_audit_digest(), quotes=False)  # no quoted sentence anywhere, sides included
    assert "- 4\\.2 million euros — Harbor Times (2025-06-13)[^6]\n- 6 million euros — The Ledger" in plain
    assert Q_COST_HT not in plain
    model_found = digest_markdown(make_digest())  # no kind: only who found it
    assert ("### Cost of the bridge repairs\n\nProposed by the model, verified against the quoted sentences.\n\n"
            "- About 4.2 million euros. — Harbor Times (2025-06-13)[^5]\n") in model_found
    # each side on its own line (they once ran together), the next section after a blank line
    assert "- Closer to 6 million euros. — The Ledger (2025-06-12)[^6]" in model_found.splitlines()
    assert f"  - “{Q_COST_LG}” (The Ledger, sentence 11)\n\n## Sentiment\n" in model_found


def test_markdown_sources_list_status_copy_and_verified_facts() -> None:
    lines = digest_markdown(make_audit_digest()).splitlines()
    ht = lines.index("- Harbor Times — [Council passes budget](https://harbor-times.example/story) — 2025-06-13"
                     " — used, 2 facts")
    assert lines[ht + 1: ht + 4] == [
        "  - **F1** The council approved the budget on Tuesday, 7-2. (sentence 4)",
        f"  - **F2** {CLAIM_COST} (sentences 7, 9; citation moved by the service from sentences 5, 6)",
        "- Coastal Wire — [Budget vote: 7-2](https://coastal-wire.example/story) — 2025-06-13 — used, 1 fact",
    ]
    assert "  - **F1** Councillors passed the budget 7-2. (sentence 2; citation moved by the service from sentence 1)" \
        in lines
    assert f"  - **F1** A protester shouted {EVIL_MD}. (sentence 3)" in lines
    echo = lines.index("- Bay Echo — [Budget passed](https://bay-echo.example/story) — 2025-06-13"
                       " — used, 1 fact, copy of Harbor Times")
    assert lines[echo + 1: echo + 3] == ["  - **F1** The council approved the budget on Tuesday, 7-2. (sentence 4)",
                                         "- Gazette — Budget row — undated — failed: no verified fact"]


def test_markdown_rejections_are_a_short_list_under_a_heading() -> None:
    md = digest_markdown(make_audit_digest())
    assert ("\n## Rejected\n\n"
            "- Harbor Times: “Costs rose 9%” — 9% not in sentence 9\n"
            f"- Gazette: “{EVIL_MD}” — sentence 14 does not exist; no \\<b\\>number\\</b\\> in it\n"
            "- Gazette: “Turnout was 40%” — 40% not in sentence 2\n"
            "- Digest draft: “The council cut the budget by half.” — statement 3: half not in the cited sentences\n"
            "\nCreated ") in md
    assert "## Rejected" not in digest_markdown(make_digest())


def test_provenance_counts_repaired_items() -> None:
    ex = make_extraction()
    ex.provenance["key_facts"].repaired = 2
    assert (r"- key\_facts@2 · model qwen2.5-coder-1.5b (json\_object) · 2 calls · 2,550 tokens in / 590 out"
            " · 26.3 s · 1 re-ask · 2 repaired · 1 rejected") in extraction_markdown(ex).splitlines()


def test_the_digest_shows_what_every_call_behind_it_cost_when_every_price_is_known() -> None:
    digest = factories.digest()
    priced = [factories.call_usage(cost_usd=0.0012), factories.call_usage(cost_usd=0.0003, latency_ms=600)]
    digest.usage = Usage.of(priced)
    line = ("Every call behind it, the sources' analyses included: 2 calls · 1,800 tokens in / 240 out · 2.0 s"
            " · $0.0015")
    digest.provenance = PromptProvenance(prompt="digest@3", prompt_hash="h", model="gpt-4o-mini", mode="json_schema",
                                         calls=priced[1:])
    assert line in digest_markdown(digest).splitlines()
    assert '<p class="note">Every call behind it' in digest_html(digest)
    assert "2 calls · 1,800 tokens in / 240 out · 2.0 s · $0.0015</p>" in digest_html(digest)
    # One call of a model without a price (the embedded one, an own server's): no dollar figure at all.
    digest.usage = Usage.of([*priced, factories.call_usage(cost_usd=None)])
    assert "$" not in digest_markdown(digest).split("Every call behind it")[1]


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    children: list[Node | str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return (self.attrs.get("class") or "").split()

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        found = []
        for c in self.children:
            if isinstance(c, Node):
                if (tag is None or c.tag == tag) and (cls is None or cls in c.classes):
                    found.append(c)
                found += c.all(tag, cls)
        return found

    def one(self, tag: str | None = None, cls: str | None = None) -> Node:
        found = self.all(tag, cls)
        assert len(found) == 1, (tag, cls, len(found))
        return found[0]

    def by_id(self, id_: str) -> Node:
        return next(n for n in self.all() if n.attrs.get("id") == id_)


class _Dom(HTMLParser):
    """The page as a tree (entities decoded), to check what each element says."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.root = Node("#document", {})
        self.stack = [self.root]
        self.feed(page)
        self.close()
        assert self.stack == [self.root], [n.tag for n in self.stack]  # every element closed

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, (tag, [n.tag for n in self.stack])
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def audit_page() -> Node:
    return _Dom(digest_html(make_audit_digest())).root


def _statement(li: Node) -> tuple[str, list[str], list[str], str, str, list[str], str | None]:
    """A statement's own text, footnote numbers, hover quotes, outlet count, names, mark classes and title."""
    by = li.one("span", "by")
    return (str(li.children[0]), [a.text() for a in li.all("a") if (a.attrs["href"] or "").startswith("#fn-")],
            [q.text() for q in li.all("q")], li.one("span", "corr").text(), li.one("span", "names").text(),
            [*by.classes, by.text()], by.attrs.get("title"))


def test_html_statements_name_their_outlets_and_who_worded_them() -> None:
    items = audit_page().by_id("statements").all("li", "statement")
    assert [_statement(li) for li in items] == [
        ("The city council passed the budget on Tuesday by 7 votes to 2.", ["[1]", "[2]", "[3]"],
         [Q_BUDGET_HT, Q_BUDGET_CW, Q_COPY], "2 outlets", "Harbor Times, Coastal Wire, Bay Echo (copy of Harbor Times)",
         ["by", "by-model", "worded by the model"],
         "Worded by the model from the cited facts, then verified against the quoted sentences"),
        (CLAIM_BRIDGE, ["[4]"], [Q_BRIDGE], "1 outlet", "Harbor Times", ["by", "by-service", "claim as written"],
         "An outlet's verified claim, published as written"),
    ]
    page = digest_html(make_audit_digest())
    assert ('<span class="names"><span class="outlet">Harbor Times</span>, <span class="outlet">Coastal Wire</span>, '
            '<span class="outlet">Bay Echo</span> <span class="copy">(copy of Harbor Times)</span></span>') in page


def test_html_also_reported_is_cited_like_the_statements() -> None:
    root = audit_page()
    section = root.by_id("also-reported")
    assert section.one("h2").text() == "Also reported"
    assert [_statement(li) for li in section.all("li", "statement")] == [
        (f"A protester shouted {EVIL}.", ["[5]"], [Q_EVIL], "1 outlet", "The Ledger",
         ["by", "by-service", "claim as written"], "An outlet's verified claim, published as written"),
    ]
    assert root.by_id("fn-5").one("q").text() == Q_EVIL
    assert root.one("header").one("p", "meta").all("a")[0].attrs["href"] == "#also-reported"
    page = digest_html(make_audit_digest())
    assert "<li class=\"statement\">A protester shouted &lt;script&gt;alert(1)&lt;/script&gt; [click me]" in page
    assert 'id="also-reported"' not in digest_html(make_digest())


def test_html_disagreement_sides_are_columns_with_outlets_and_quotes() -> None:
    root = audit_page()
    topic = root.by_id("disagreements").one("div", "topic")
    assert topic.one("h3").text() == "Bridge: amount (cost) amount"
    assert topic.one("span", "kind").text() == "amount"
    assert topic.one("p", "found").text() == "Found by the service in the outlets' own sentences."
    columns = [c for c in topic.one("div", "positions").children if isinstance(c, Node)]
    assert [c.classes for c in columns] == [["position"]] * 3
    assert [(c.one("p").text(), c.one("div", "who").text(), [q.text() for q in c.all("q")],
             [m.text() for m in c.all("span", "qmeta")]) for c in columns] == [
        ("4.2 million euros", "Harbor Times 2025-06-13", [Q_COST_HT], ["Harbor Times · 2025-06-13 · sentence 9 [6]"]),
        ("6 million euros", "The Ledger 2025-06-12", [Q_COST_LG], ["The Ledger · 2025-06-12 · sentence 11 [7]"]),
        ("5 million euros", "Coastal Wire 2025-06-13", [Q_COST_CW], ["Coastal Wire · 2025-06-13 · sentence 5 [8]"]),
    ]
    # each quote links to its footnote, and the footnote back to it
    assert root.by_id("ref-8-1").attrs["href"] == "#fn-8"
    assert root.by_id("fn-8").one("a", "back").attrs["href"] == "#ref-8-1"
    page = digest_html(make_audit_digest())
    assert ".positions { display: grid; grid-auto-flow: column; grid-auto-columns: minmax(0, 1fr);" in page
    model_found = _Dom(digest_html(make_digest())).root.by_id("disagreements")
    assert model_found.one("h3").text() == "Cost of the bridge repairs"
    assert model_found.one("p", "found").text() == "Proposed by the model, verified against the quoted sentences."


def _sources(root: Node) -> list[tuple[str, str, list[str]]]:
    """(outlet, status, the audit row's verified facts) per source row."""
    rows = root.by_id("sources").one("tbody").all("tr")
    out = []
    for i, row in enumerate(rows):
        if "source" not in row.classes:
            continue
        audit = rows[i + 1] if i + 1 < len(rows) and "audit" in rows[i + 1].classes else None
        facts = [li.text() for li in audit.one("ul", "facts").all("li")] if audit and audit.all("ul", "facts") else []
        out.append((row.all("td")[0].text(), row.all("td")[3].text(), facts))
    return out


def test_html_sources_show_status_copy_and_verified_facts() -> None:
    moved = "citation moved by the service from"
    assert _sources(audit_page()) == [
        ("Harbor Times", "used, 2 facts", ["F1 The council approved the budget on Tuesday, 7-2. (sentence 4)",
                                           f"F2 {CLAIM_COST} (sentences 7, 9) {moved} sentences 5, 6"]),
        ("Coastal Wire", "used, 1 fact", [f"F1 Councillors passed the budget 7-2. (sentence 2) {moved} sentence 1"]),
        ("The Ledger", "used, 1 fact", [f"F1 A protester shouted {EVIL}. (sentence 3)"]),
        ("Bay Echo", "used, 1 fact, copy of Harbor Times",
         ["F1 The council approved the budget on Tuesday, 7-2. (sentence 4)"]),
        ("Gazette", "failed: no verified fact", []),
    ]
    page = digest_html(make_audit_digest())
    assert (f'<span class="sents">(sentences 7, 9)</span> <span class="moved">{moved} sentences 5, 6</span>') in page
    assert "<td>F1 A protester shouted &lt;script&gt;" not in page  # escaped, and inside the list
    assert '<span class="fid">F1</span> A protester shouted &lt;script&gt;alert(1)&lt;/script&gt;' in page
    assert 'class="audit"' not in digest_html(make_digest())  # nothing to audit: the table is as before


def test_html_rejections_are_collapsed_with_their_reasons() -> None:
    root = audit_page()
    details = root.all("details")
    assert all(d.classes == ["rejected"] and "open" not in d.attrs for d in details)
    assert [(d.one("summary").text(), [(li.one("span", "item").text(), li.one("span", "reasons").text())
                                       for li in d.all("li")]) for d in details] == [
        ("1 item rejected", [("Costs rose 9%", "9% not in sentence 9")]),
        ("2 items rejected", [(EVIL, "sentence 14 does not exist; no <b>number</b> in it"),
                              ("Turnout was 40%", "40% not in sentence 2")]),
        ("1 drafted statement rejected", [("The council cut the budget by half.",
                                           "statement 3: half not in the cited sentences")]),
    ]
    page = digest_html(make_audit_digest())
    assert ('<li><span class="item">&lt;script&gt;alert(1)&lt;/script&gt; [click me](javascript:alert(1))</span> — '
            '<span class="reasons">sentence 14 does not exist; no &lt;b&gt;number&lt;/b&gt; in it</span></li>') in page
    assert "<details" not in digest_html(make_digest())


def test_audit_page_is_still_safe() -> None:
    page = digest_html(make_audit_digest())
    parsed = _Links()
    parsed.feed(page)
    assert parsed.scripts == 0 and "<script>alert" not in page
    for href in parsed.hrefs:
        assert href.startswith(("#", "https://")), href
        if href.startswith("#"):
            assert href[1:] in parsed.ids, href
    html = MarkdownIt("commonmark").render(digest_markdown(make_audit_digest()))
    assert "<script" not in html and "<b>number" not in html
    assert all(href.startswith("https://") for href in re.findall(r'href="([^"]*)"', html))


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: the browser test needs Chromium; run `apt-get install chromium`")
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True, text=True, timeout=120, check=False)


def test_missing_chromium_fails_with_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        _chromium(tmp_path)


# Appended to a copy of the page (the real page allows no scripts): marks which sections a reader sees.
PROBE = """<script>
for (const id of ["statements", "disagreements", "footnotes", "sources"]) {
  const el = document.getElementById(id), r = el && el.getBoundingClientRect(), cs = el && getComputedStyle(el);
  const seen = !!el && r.width > 100 && r.height > 20 && cs.visibility === "visible" && cs.opacity !== "0";
  document.body.setAttribute("data-visible-" + id, String(seen));
}
const pop = document.querySelector(".pop");
document.body.setAttribute("data-pop-hidden", String(getComputedStyle(pop).display === "none"));
pop.parentElement.querySelector("a").focus();
document.body.setAttribute("data-pop-on-focus", String(getComputedStyle(pop).display !== "none"));
</script>"""


def test_browser_shows_sections_and_footnotes(tmp_path: Path) -> None:
    page = digest_html(make_digest())
    target = tmp_path / "digest.html"
    target.write_text(page, encoding="utf-8")
    shot = tmp_path / "digest.png"
    run = _chromium(tmp_path, "--window-size=1280,2200", f"--screenshot={shot}", target.as_uri())
    assert shot.exists(), run.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1280, 2200)
    assert len(png) > 50_000  # text, tables and the amber box, not a blank page

    probe_page, csp = re.subn(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
    assert csp == 1
    probe = tmp_path / "probe.html"
    probe.write_text(probe_page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    run = _chromium(tmp_path, "--window-size=1280,2200", "--virtual-time-budget=3000", "--dump-dom", probe.as_uri())
    dom = run.stdout
    for section in ("statements", "disagreements", "footnotes", "sources"):
        assert f'id="{section}"' in dom
        assert f'data-visible-{section}="true"' in dom, (section, run.stderr[-2000:])
    assert 'data-pop-hidden="true"' in dom  # quotes stay out of the way until asked for...
    assert 'data-pop-on-focus="true"' in dom  # ...and show on focus (hover uses the same rule)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom


# Appended to a copy of the audit page: are the sides of a disagreement columns, and are rejections collapsed?
LAYOUT_PROBE = """<script>
const cols = [...document.querySelector("#disagreements .positions").children].map(e => e.getBoundingClientRect());
const sameRow = cols.every(r => Math.abs(r.top - cols[0].top) < 1);
const leftToRight = cols.every((r, i) => i === 0 || cols[i - 1].right <= r.left);
const stacked = cols.every((r, i) => i === 0 || cols[i - 1].bottom <= r.top);
document.body.setAttribute("data-columns", String(cols.length));
document.body.setAttribute("data-side-by-side", String(cols.length > 1 && sameRow && leftToRight));
document.body.setAttribute("data-stacked", String(cols.length > 1 && stacked));
document.body.setAttribute("data-min-column", String(Math.round(Math.min(...cols.map(r => r.width)))));
const also = document.getElementById("also-reported").getBoundingClientRect();
document.body.setAttribute("data-also-visible", String(also.width > 100 && also.height > 20));
const details = [...document.querySelectorAll("details.rejected")];
const shown = d => d.querySelector("ul").checkVisibility(), closed = details.map(d => d.getBoundingClientRect().height);
document.body.setAttribute("data-rejected-collapsed", String(details.length === 3 && !details.some(shown)));
details.forEach(d => { d.open = true; });
const grown = details.every((d, i) => d.getBoundingClientRect().height > closed[i] + 10);
document.body.setAttribute("data-rejected-opens", String(details.every(shown) && grown));
</script>"""


def _layout(tmp_path: Path, width: int) -> str:
    page, csp = re.subn(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", digest_html(make_audit_digest()))
    assert csp == 1
    probe = tmp_path / f"layout-{width}.html"
    probe.write_text(page.replace("</body>", LAYOUT_PROBE + "</body>"), encoding="utf-8")
    run = _chromium(tmp_path, f"--window-size={width},2400", "--virtual-time-budget=3000", "--dump-dom",
                    probe.as_uri())
    assert 'data-columns="3"' in run.stdout, run.stderr[-2000:]
    return run.stdout


def test_browser_sets_the_sides_side_by_side_and_collapses_rejections(tmp_path: Path) -> None:
    wide = _layout(tmp_path, 1280)
    assert 'data-side-by-side="true"' in wide  # three columns in one row, left to right
    assert int(re.findall(r'data-min-column="(\d+)"', wide)[0]) > 150
    assert 'data-also-visible="true"' in wide
    assert 'data-rejected-collapsed="true"' in wide and 'data-rejected-opens="true"' in wide
    narrow = _layout(tmp_path, 400)  # a phone: the sides stack, each readable
    assert 'data-side-by-side="false"' in narrow and 'data-stacked="true"' in narrow
