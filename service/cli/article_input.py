"""The articles a command is given: files of text, HTML or JSON, or one article on standard input."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import trafilatura
import typer
from pydantic import ValidationError

from schemas import ArticleIn, PreparedArticle
from service.article_files import decode, load_article
from service.errors import InputError, validation_errors
from service.pipeline.text import prepare

Files = Annotated[list[Path], typer.Argument(
    help="Article files: .txt (first line the title), .html or .json (an ArticleIn); - reads one article from "
    "standard input (JSON if it starts with {, HTML if with <, else text with the title first).")]
STDIN = Path("-")


def _invalid(name: str, exc: ValidationError) -> InputError:
    first = validation_errors(exc)[0]
    where = ".".join(str(part) for part in first["loc"])
    return InputError(f"{name}: invalid article: {where + ': ' if where else ''}{first['msg']}")


def _article_json(name: str, text: str) -> ArticleIn:
    try:
        json.loads(text)
    except ValueError as exc:
        line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
        at = f" at line {line}, column {column}" if line is not None else ""
        raise InputError(f"{name}: not valid JSON{at}: {getattr(exc, 'msg', str(exc))}") from None
    try:
        return ArticleIn.model_validate_json(text)
    except ValidationError as exc:
        raise _invalid(name, exc) from None


def _article_from_stdin() -> ArticleIn:
    """One article read from standard input: JSON (an ArticleIn), HTML, or text with the title first."""
    name = "<stdin>"
    text = decode(sys.stdin.buffer.read(), name)
    start = text.lstrip()[:1]
    try:
        if start == "{":
            return _article_json(name, text)
        if start == "<":
            meta = trafilatura.extract_metadata(text)
            return ArticleIn(outlet=(meta.sitename if meta and meta.sitename else "stdin"),
                             title=(meta.title if meta and meta.title else ""), body=text, content_type="html",
                             url=meta.url if meta else None)
        title, _, body = text.partition("\n")
        return ArticleIn(outlet="stdin", title=title.strip(), body=body)
    except ValidationError as exc:
        raise _invalid(name, exc) from None


def _load(path: Path) -> ArticleIn:
    """An article from a file or, for ``-``, from standard input; every error names where it came from."""
    if path == STDIN:
        return _article_from_stdin()
    if path.suffix.lower() == ".json":
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
        return _article_json(str(path), decode(data, str(path)))
    return load_article(path)


def load_all(files: list[Path]) -> list[tuple[str, ArticleIn]]:
    """Each article with the name its errors and warnings give it."""
    if files.count(STDIN) > 1:
        raise InputError("- (standard input) can be given once: it holds one article")
    return [("<stdin>" if f == STDIN else str(f), _load(f)) for f in files]


def prepare_named(name: str, article: ArticleIn, max_chars: int) -> PreparedArticle:
    """``prepare``, with an unusable article's error naming where it came from."""
    try:
        return prepare(article, max_chars=max_chars)
    except InputError as exc:
        raise type(exc)(f"{name}: {exc.detail}", **exc.extra) from None
