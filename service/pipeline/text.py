"""prepare: turn an incoming article into clean, numbered sentences (pure).

The model never quotes; it cites sentence numbers and the service fills in the quote. So the
sentences produced here are the only text a digest can ever attribute to a journalist, and
their numbering must be stable for a given text: same text, same hash, same sentences.
"""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata
from html.parser import HTMLParser

import pysbd
import trafilatura

from schemas import ArticleIn, PreparedArticle, Sentence
from service.errors import ArticleTooLargeError, EmptyArticleError

# Invisible characters that change nothing a reader sees but can hide text from checks:
# zero-width spaces and joiners, the BOM, and bidirectional overrides/isolates.
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u00ad]")
_SPACES = re.compile(r"[^\S\n]+")
_LOOKS_LIKE_HTML = re.compile(r"^\s*(<!doctype html|<html|<body|<article|<div|<p[ >])", re.IGNORECASE)


# pysbd segmenters keep state while they work, so threads must not share one.
_local = threading.local()


def _segmenter(language: str) -> pysbd.Segmenter:
    cache: dict[str, pysbd.Segmenter] = _local.__dict__.setdefault("segmenters", {})
    if language not in cache:
        try:
            cache[language] = pysbd.Segmenter(language=language, clean=False, char_span=False)
        except ValueError:  # pysbd knows ~20 languages; English rules are the safest fallback
            cache[language] = pysbd.Segmenter(language="en", clean=False, char_span=False)
    return cache[language]


class _PlainText(HTMLParser):
    """Every text node outside code, styling and page furniture; a block element starts a new line."""

    SKIPPED = frozenset({"script", "style", "noscript", "template", "head", "title", "svg", "math", "iframe", "object",
                         "nav", "header", "footer", "aside", "form", "button", "select", "textarea"})
    BLOCKS = frozenset({"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
                        "blockquote", "pre", "tr", "table", "dd", "dt", "figcaption", "main", "hr"})
    VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "track",
                      "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIPPED and tag not in self.VOID:
            self.skipping.append(tag)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self.skipping and tag == self.skipping[-1]:
            self.skipping.pop()
            self.parts.append("\n")
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def _plain_text(html: str) -> str:
    parser = _PlainText()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


def html_to_text(html: str) -> str:
    """Main text of an HTML page (no navigation, scripts, comments), or '' when there is none.

    trafilatura finds an article's main text, but returns nothing for a fragment too short to look
    like one (``<p>The council approved the budget on Monday.</p>``): then every text node outside
    scripts, styles and page furniture is the text.
    """
    text = trafilatura.extract(html, include_comments=False, include_tables=False, favor_precision=True)
    return text or _plain_text(html)


def normalise(text: str) -> str:
    """NFC, invisible characters removed, whitespace folded, one paragraph per line."""
    text = unicodedata.normalize("NFC", text)
    text = _INVISIBLE.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def clean_inline(text: str) -> str:
    """Model-written text as it will be published: NFC, no invisible characters, one line.

    Applied before verification, so '7\u200b2' is checked as the 72 a reader sees.
    """
    return " ".join(_INVISIBLE.sub("", unicodedata.normalize("NFC", text)).split())


def split_sentences(text: str, language: str = "en") -> tuple[Sentence, ...]:
    """Numbered sentences with character offsets into ``text``; paragraphs never merge.

    Offsets are found by searching forward from the previous sentence: pysbd's own character
    spans cost twice the time for the same result.
    """
    segmenter = _segmenter((language or "en")[:2].lower())
    sentences: list[Sentence] = []
    offset = 0
    for paragraph in text.split("\n"):
        cursor = 0
        for raw in segmenter.segment(paragraph):
            piece = raw.strip()
            if not piece or not any(ch.isalnum() for ch in piece):
                continue
            start = paragraph.index(piece, cursor)
            cursor = start + len(piece)
            sentences.append(Sentence(n=len(sentences) + 1, text=piece, start=offset + start, end=offset + cursor))
        offset += len(paragraph) + 1
    return tuple(sentences)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prepare(article: ArticleIn, *, max_chars: int) -> PreparedArticle:
    """Clean, number and hash an article. Raises InputError subclasses, never returns half."""
    if len(article.body) > max_chars:
        raise ArticleTooLargeError(
            f"article body has {len(article.body)} characters; the limit is {max_chars}",
            limit=max_chars,
        )
    body = article.body
    if article.content_type == "html" or _LOOKS_LIKE_HTML.match(body):
        body = html_to_text(body)
    text = normalise(body)
    sentences = split_sentences(text, article.language or "en")
    if not sentences:
        raise EmptyArticleError("article has no readable sentence after removing markup and whitespace")
    return PreparedArticle(
        outlet=normalise(article.outlet) or article.outlet,
        title=normalise(article.title),
        url=article.url,
        published_at=article.published_at,
        language=article.language,
        story_id=article.story_id,
        cms_id=article.id,
        text=text,
        sentences=sentences,
        content_hash=content_hash(text),
    )
