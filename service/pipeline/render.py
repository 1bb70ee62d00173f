"""render: a Digest or an Extraction as JSON, Markdown or an HTML page (pure: schemas in, strings out).

Everything that comes from an article or from the model is untrusted text. The HTML template is
autoescaped; in the Markdown templates every `{{ ... }}` output goes through `md_escape` (the
environment's finalize), so a value is escaped unless a filter here returns `Verbatim` (numbers, URLs).

The digest shows the editor everything the service decided: each statement with its outlets and
whether the model worded it or it is an outlet's verified claim as written; the verified facts past
the statements' cap ("also reported"); the disagreements side by side with their kind; and per
source its status, the outlet it copies, its verified facts (with any citation the service moved)
and what was rejected, with the reasons.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_eval_context, select_autoescape
from jinja2.nodes import EvalContext

from schemas.digest import Citation, Digest, Position, Source, Statement, WrittenBy
from schemas.extraction import Extraction, PromptProvenance
from schemas.facts import Fact
from schemas.usage import Usage

__all__ = ["Verbatim", "digest_html", "digest_json", "digest_markdown", "extraction_markdown", "md_escape", "safe_url"]

_TEMPLATES = Path(__file__).resolve().parent / "templates"
_MD_INLINE = re.compile(r"([\\`*_\[\]<>&#|~])")  # emphasis, links, code, raw HTML, entities, tables
_MD_LEADING = re.compile(r"^(?:([-+=])|(\d+)([.)]))")  # would start a list or heading at line start


class Verbatim(str):
    """Text this module formatted itself (a number, an encoded URL): Markdown output keeps it as is."""


def md_escape(value: object) -> str:
    """Untrusted text as inert Markdown on one line; `Verbatim` values pass through untouched."""
    if isinstance(value, Verbatim):
        return value
    text = _MD_INLINE.sub(r"\\\1", " ".join(str(value).split()))
    return _MD_LEADING.sub(lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", text)


def safe_url(url: str | None) -> str | None:
    """The URL if it is plain http(s), else None: no javascript:, data: or relative links."""
    url = (url or "").strip()
    return url if url.lower().startswith(("http://", "https://")) else None


def _md_url(url: str) -> Verbatim:
    """A URL usable as a Markdown link destination: no spaces, parentheses or angle brackets."""
    return Verbatim(quote(url, safe="/:?#[]@!$&'*+,;=%~"))


def _day(value: datetime | None) -> str:
    return value.date().isoformat() if value else "undated"


def _signed(value: float) -> Verbatim:
    return Verbatim(f"{value:+.2f}")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _sentences(numbers: list[int]) -> Verbatim:
    """`sentence 4` or `sentences 7, 9`."""
    return Verbatim(("sentence " if len(numbers) == 1 else "sentences ") + ", ".join(map(str, numbers)))


def _cited(fact: Fact) -> Verbatim:
    """The sentence numbers a verified fact cites."""
    return _sentences([q.sentence for q in fact.citations])


#: The mark beside a statement: (label, longer explanation).
_WRITTEN_BY: dict[WrittenBy, tuple[str, str]] = {
    "model": ("worded by the model",
              "Worded by the model from the cited facts, then verified against the quoted sentences"),
    "service": ("claim as written", "An outlet's verified claim, published as written"),
}
#: Who found a disagreement.
_FOUND_BY: dict[WrittenBy, str] = {
    "model": "Proposed by the model, verified against the quoted sentences.",
    "service": "Found by the service in the outlets' own sentences.",
}


def _by(written_by: WrittenBy) -> str:
    return _WRITTEN_BY[written_by][0]


def _by_title(written_by: WrittenBy) -> str:
    return _WRITTEN_BY[written_by][1]


def _found_by(written_by: WrittenBy) -> str:
    return _FOUND_BY[written_by]


def _usage(usage: Usage) -> str:
    """calls, tokens in/out, the model's seconds and, where every call's price is known, dollars."""
    parts = [
        _plural(usage.requests, "call"),
        f"{usage.input_tokens:,} tokens in / {usage.output_tokens:,} out",
        f"{usage.latency_ms / 1000:.1f} s",
    ]
    if usage.cost_usd is not None and usage.requests:
        parts.append(f"${usage.cost_usd:.4f}")
    return " · ".join(parts)


def _provenance(prov: PromptProvenance) -> str:
    """prompt@version, model, its usage, re-asks, repaired (if any), rejected, the error."""
    parts = [
        prov.prompt,
        f"model {prov.model} ({prov.mode})",
        _usage(prov.usage),
        _plural(prov.reasks, "re-ask"),
        *([f"{prov.repaired} repaired"] if prov.repaired else []),
        f"{prov.rejected} rejected",
    ]
    if prov.error:
        parts.append(f"error: {prov.error}")
    return " · ".join(parts)


def _status(source: Source) -> str:
    copy = f", copy of {source.copy_of}" if source.copy_of else ""
    if source.status == "used":
        return f"used, {_plural(source.facts, 'fact')}{copy}"
    text = source.status.replace("_", " ")
    if source.status == "other_language" and source.language:
        text += f" ({source.language})"
    text += copy
    return f"{text}: {source.error}" if source.error else text


@dataclass
class Note:
    """One footnote: a cited sentence, numbered once however often it is cited."""

    n: int
    cite: Citation
    refs: list[str] = field(default_factory=list)  # HTML ids of the places that cite it


@dataclass
class Ref:
    n: int
    id: str
    cite: Citation


@dataclass
class StatementView:
    text: str
    outlets: int  # independent outlets: a copy counts once
    names: list[tuple[str, str | None]]  # (outlet, the outlet it copies) in citation order
    by: WrittenBy
    refs: list[Ref]


@dataclass
class PositionView:
    says: str
    who: list[tuple[str, str]]  # (outlet, its dates)
    refs: list[Ref]


@dataclass
class DisagreementView:
    topic: str
    kind: str | None
    by: WrittenBy
    positions: list[PositionView]


@dataclass
class RejectedView:
    """Items dropped from one source (or from the digest's own draft), with the reasons."""

    outlet: str
    entries: list[tuple[str, str]]  # (item, its reasons)


class _Footnotes:
    def __init__(self) -> None:
        self.notes: list[Note] = []
        self._by_key: dict[tuple[object, ...], Note] = {}

    def refs(self, citations: list[Citation]) -> list[Ref]:
        out: list[Ref] = []
        for cite in citations:
            key = (cite.article_id, cite.outlet, cite.url, cite.published_at, cite.sentence, cite.quote)
            note = self._by_key.get(key)
            if note is None:
                note = self._by_key[key] = Note(len(self.notes) + 1, cite)
                self.notes.append(note)
            if any(ref.n == note.n for ref in out):
                continue
            ref = Ref(note.n, f"ref-{note.n}-{len(note.refs) + 1}", cite)
            note.refs.append(ref.id)
            out.append(ref)
        return out


def _who(position: Position) -> list[tuple[str, str]]:
    """Each outlet of a position with the publication dates of its cited articles."""
    outlets = position.outlets or list(dict.fromkeys(c.outlet for c in position.citations))
    cites = position.citations
    return [(o, ", ".join(sorted({_day(c.published_at) for c in cites if c.outlet == o}))) for o in outlets]


def _copies(digest: Digest) -> dict[tuple[str | None, str], str]:
    """(article id, outlet) -> the outlet it copies, for the sources that repeat another one."""
    return {(s.article_id, s.outlet): s.copy_of for s in digest.sources if s.copy_of}


def _names(statement: Statement, copies: dict[tuple[str | None, str], str]) -> list[tuple[str, str | None]]:
    """The outlets a statement cites, each once, with the outlet it copies (if it is a copy)."""
    names: dict[str, str | None] = {}
    for c in statement.citations:
        copy_of = copies.get((c.article_id, c.outlet))
        if c.outlet not in names or (names[c.outlet] is not None and copy_of is None):
            names[c.outlet] = copy_of
    return list(names.items())


def _rejected(digest: Digest) -> list[RejectedView]:
    views = [RejectedView(s.outlet, [(r.item, "; ".join(r.reasons)) for r in s.rejected])
             for s in digest.sources if s.rejected]
    if digest.provenance and digest.provenance.rejections:
        views.append(RejectedView("Digest draft", [(r.item, "; ".join(r.reasons))
                                                       for r in digest.provenance.rejections]))
    return views


def _context(digest: Digest) -> dict[str, object]:
    """Footnotes numbered in reading order: statements, then "also reported", then the disagreements."""
    notes = _Footnotes()
    copies = _copies(digest)

    def view(s: Statement) -> StatementView:
        return StatementView(s.text, s.outlets, _names(s, copies), s.written_by, notes.refs(s.citations))

    statements = [view(s) for s in digest.statements]
    also = [view(s) for s in digest.also_reported]
    disagreements = [
        DisagreementView(d.topic, d.kind, d.written_by,
                         [PositionView(p.says, _who(p), notes.refs(p.citations)) for p in d.positions])
        for d in digest.disagreements
    ]
    used = sum(1 for s in digest.sources if s.status == "used")
    return {"digest": digest, "statements": statements, "also": also, "disagreements": disagreements,
            "rejected": _rejected(digest), "notes": notes.notes, "used": used}


@pass_eval_context
def _finalize(eval_ctx: EvalContext, value: object) -> object:
    """HTML templates are autoescaped; every other template is Markdown and escaped here."""
    return value if eval_ctx.autoescape else md_escape(value)


_ENV = Environment(loader=FileSystemLoader(_TEMPLATES), undefined=StrictUndefined, finalize=_finalize,
                   autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
                   trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
_ENV.filters.update(day=_day, signed=_signed, plural=_plural, provenance=_provenance, usage=_usage, status=_status,
                    safe_url=safe_url, md_url=_md_url, sentences=_sentences, cited=_cited, by=_by,
                    by_title=_by_title, found_by=_found_by)


def digest_markdown(digest: Digest, *, quotes: bool = True) -> str:
    """Markdown with footnotes `[^n]`; `quotes=False` leaves the quoted sentences out of them."""
    return _ENV.get_template("digest.md.j2").render(**_context(digest), quotes=quotes)


def digest_html(digest: Digest) -> str:
    """A standalone HTML page for editors: inline CSS, no scripts, no external assets."""
    return _ENV.get_template("digest.html.j2").render(**_context(digest))


def digest_json(digest: Digest) -> str:
    return digest.model_dump_json(indent=2)


def extraction_markdown(extraction: Extraction) -> str:
    """One article's facts, sentiment and provenance, each claim followed by its quoted sentences."""
    return _ENV.get_template("extraction.md.j2").render(ex=extraction, article=extraction.article)
