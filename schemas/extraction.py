"""The analysis of one article: facts, sentiment and how they were obtained."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from schemas.article import PreparedArticle
from schemas.facts import Fact, Rejection
from schemas.sentiment import Sentiment
from schemas.usage import CallUsage, Usage


class PromptProvenance(BaseModel):
    """How one prompt's result for one article was obtained."""

    prompt: str = Field(description="name@version")
    prompt_hash: str
    model: str
    mode: str
    calls: list[CallUsage] = Field(default_factory=list)
    reasks: int = 0
    repaired: int = Field(
        default=0, description="Items whose citation the service moved to the sentences that state them."
    )
    rejected: int = Field(default=0, description="Items dropped after the re-ask.")
    rejections: list[Rejection] = Field(default_factory=list)
    error: str | None = Field(default=None, description="Set when this prompt produced nothing usable.")

    @property
    def usage(self) -> Usage:
        return Usage.of(self.calls)


class ArticleRef(BaseModel):
    """Enough of an article to cite it."""

    article_id: str | None = None
    outlet: str
    title: str
    url: str | None = None
    published_at: datetime | None = None
    language: str | None = None
    content_hash: str
    sentence_count: int

    @classmethod
    def of(cls, article: PreparedArticle, article_id: str | None = None) -> ArticleRef:
        """The reference to cite ``article`` by; ``article_id`` defaults to the CMS's own id."""
        return cls(
            article_id=article_id or article.cms_id,
            outlet=article.outlet,
            title=article.title,
            url=article.url,
            published_at=article.published_at,
            language=article.language,
            content_hash=article.content_hash,
            sentence_count=len(article.sentences),
        )


class Extraction(BaseModel):
    """Facts and sentiment of one article, with provenance per prompt."""

    article: ArticleRef
    facts: list[Fact] = Field(default_factory=list)
    sentiment: Sentiment | None = None
    provenance: dict[str, PromptProvenance] = Field(default_factory=dict)

    @property
    def usage(self) -> Usage:
        total = Usage()
        for prov in self.provenance.values():
            total = total + prov.usage
        return total
