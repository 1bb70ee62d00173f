"""Read article files for the CLI: .txt (first line the title), .html, or .json (an ArticleIn)."""

from __future__ import annotations

from pathlib import Path

import trafilatura
from pydantic import ValidationError

from schemas import ArticleIn
from service.errors import InputError, UndecodableArticleError, validation_lines


def decode(data: bytes, name: str) -> str:
    """UTF-8 text or a clear refusal: binary files and other encodings are not guessed at."""
    if b"\x00" in data:
        raise UndecodableArticleError(f"{name}: binary file (contains NUL bytes), not an article")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UndecodableArticleError(f"{name}: not UTF-8 text (byte {exc.start} is invalid)") from exc


def load_article(path: Path) -> ArticleIn:
    """An ArticleIn from a file; the outlet defaults to the file's name when the file has none."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
    text = decode(data, str(path))
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            return ArticleIn.model_validate_json(text)
        if suffix in (".html", ".htm"):
            meta = trafilatura.extract_metadata(text)
            return ArticleIn(
                outlet=(meta.sitename if meta and meta.sitename else path.stem),
                title=(meta.title if meta and meta.title else ""),
                body=text,
                content_type="html",
                url=meta.url if meta else None,
            )
        if suffix in (".txt", ".md", ""):
            title, _, body = text.partition("\n")
            return ArticleIn(outlet=path.stem, title=title.strip(), body=body)
    except ValidationError as exc:
        raise InputError(f"{path}: invalid article: {validation_lines(exc)[0]}") from exc
    raise InputError(f"{path}: unsupported file type {suffix!r}; use .txt, .html or .json")
