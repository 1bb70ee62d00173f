"""Articles and settings the tests share."""

from __future__ import annotations

from pathlib import Path

from schemas import ArticleIn, PreparedArticle
from service.article_files import load_article
from service.pipeline.text import prepare

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "articles").glob("*.json"))
EXAMPLE_IDS = [p.stem.split("-")[0] for p in EXAMPLES]


def example(stem_prefix: str) -> ArticleIn:
    return load_article(next(p for p in EXAMPLES if p.stem.startswith(stem_prefix)))


def prepared(text: str, outlet: str = "Test Outlet", title: str = "A test") -> PreparedArticle:
    return prepare(ArticleIn(outlet=outlet, title=title, body=text), max_chars=100_000)
