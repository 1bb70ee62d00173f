"""Render stage: Markdown footnotes, HTML escaping and links, extraction Markdown, and a real browser."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
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
)
from service.pipeline.render import digest_html, digest_json, digest_markdown, extraction_markdown, md_escape

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
