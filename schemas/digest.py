"""One cited digest per story: the model's draft, and what the service publishes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.article import ArticleIn, PreparedArticle
from schemas.extraction import ArticleRef, PromptProvenance
from schemas.facts import Fact, Rejection, SentenceQuote
from schemas.sentiment import SentimentLabel
from schemas.usage import Usage

FACT_ID_PATTERN = r"^A\d+\.F\d+$"


class StatementDraft(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=500)
    facts: list[str] = Field(min_length=1, max_length=6, description="Fact ids like A2.F3 that support it.")


class PositionDraft(BaseModel):
    model_config = ConfigDict(extra="forbid")

    says: str = Field(min_length=1, max_length=300, description="What this side reports.")
    facts: list[str] = Field(min_length=1, max_length=4)


class DisagreementDraft(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, max_length=200)
    positions: list[PositionDraft] = Field(min_length=2, max_length=4)


class DigestDraft(BaseModel):
    """The digest prompt's output."""

    model_config = ConfigDict(extra="forbid")

    headline: str = Field(min_length=1, max_length=200)
    statements: list[StatementDraft] = Field(min_length=1, max_length=10)
    disagreements: list[DisagreementDraft] = Field(default_factory=list, max_length=6)


class Citation(BaseModel):
    """Where a statement comes from: outlet, date and the journalist's exact sentence."""

    fact_id: str
    article_id: str | None = None
    outlet: str
    published_at: datetime | None = None
    url: str | None = None
    sentence: int
    quote: str

    @classmethod
    def of(cls, fact_id: str, article: ArticleRef, quote: SentenceQuote) -> Citation:
        return cls(fact_id=fact_id, article_id=article.article_id, outlet=article.outlet,
                   published_at=article.published_at, url=article.url, sentence=quote.sentence, quote=quote.quote)


WrittenBy = Literal["model", "service"]


class Statement(BaseModel):
    text: str
    citations: list[Citation] = Field(min_length=1)
    outlets: int = Field(description="Independent outlets that support it (corroboration); a copy counts once.")
    written_by: WrittenBy = Field(
        default="model",
        description="model: worded by the model and verified; service: a verified claim published as written.",
    )


class Position(BaseModel):
    says: str
    outlets: list[str]
    citations: list[Citation] = Field(min_length=1)


class Disagreement(BaseModel):
    topic: str
    kind: str | None = Field(default=None, description="What differs: amount, date, title, organisation, count...")
    positions: list[Position] = Field(min_length=2)
    written_by: WrittenBy = Field(
        default="model", description="model: proposed by the model and verified; service: found by the service."
    )


class OutletSentiment(BaseModel):
    outlet: str
    label: SentimentLabel
    score: float


class EntitySentimentSummary(BaseModel):
    entity: str
    label: SentimentLabel
    score: float = Field(description="Mean over the outlets that mention the entity.")
    outlets: int


class StorySentiment(BaseModel):
    """Aggregated by the service from the articles' verified sentiment, never by the model."""

    overall: SentimentLabel
    score: float
    by_outlet: list[OutletSentiment]
    entities: list[EntitySentimentSummary]


class Source(BaseModel):
    article_id: str | None = None
    outlet: str
    title: str
    url: str | None = None
    published_at: datetime | None = None
    language: str | None = None
    status: Literal["used", "failed", "duplicate", "other_language"] = "used"
    error: str | None = None
    facts: int = 0
    copy_of: str | None = Field(default=None, description="Outlet whose text this one repeats almost word for word.")
    verified: list[Fact] = Field(default_factory=list, description="Its verified facts, as the editor audits them.")
    rejected: list[Rejection] = Field(default_factory=list, description="What was dropped, with the reasons.")
    usage: Usage | None = Field(default=None, description="What analysing it took: every model call, cost included.")

    @classmethod
    def of(cls, article: ArticleRef | PreparedArticle | ArticleIn, *, article_id: str | None = None,
           **outcome: Any) -> Source:
        """The source line for ``article``, with its outcome (status, error, facts...)."""
        if article_id is None:
            article_id = (article.article_id if isinstance(article, ArticleRef)
                          else article.cms_id if isinstance(article, PreparedArticle) else article.id)
        return cls(article_id=article_id, outlet=article.outlet, title=article.title, url=article.url,
                   published_at=article.published_at, language=article.language, **outcome)


class Digest(BaseModel):
    """The published digest of a story."""

    story_id: str | None = None
    headline: str
    statements: list[Statement]
    also_reported: list[Statement] = Field(
        default_factory=list, description="Verified facts beyond the statements' cap, each cited: none is lost."
    )
    disagreements: list[Disagreement] = Field(default_factory=list)
    sentiment: StorySentiment | None = None
    sources: list[Source]
    language: str = "en"
    provenance: PromptProvenance | None = None
    usage: Usage | None = Field(
        default=None, description="Every model call behind the digest: its sources' analyses (at what they cost "
        "when first made, cached or not) and its own.")
    created_at: datetime | None = None
