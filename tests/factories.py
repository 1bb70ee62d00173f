"""Articles and settings the tests share."""

from __future__ import annotations

from pathlib import Path

from schemas import ArticleIn, Digest, PreparedArticle
from service.article_files import load_article
from service.llm.port import Completer
from service.pipeline.story import StoryOptions, digest_story, prepare_all
from service.pipeline.text import prepare
from service.prompts import Prompt

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "articles").glob("*.json"))
EXAMPLE_IDS = [p.stem.split("-")[0] for p in EXAMPLES]


def example(stem_prefix: str) -> ArticleIn:
    return load_article(next(p for p in EXAMPLES if p.stem.startswith(stem_prefix)))


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
