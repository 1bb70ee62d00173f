"""Sentiment of one article, overall and per entity, each with its evidence sentences."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.facts import SentenceQuote

SentimentLabel = Literal["positive", "negative", "neutral", "mixed"]


class EntitySentimentDraft(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entity: str = Field(min_length=1, max_length=120)
    label: SentimentLabel
    score: float = Field(ge=-1, le=1)
    sentences: list[int] = Field(min_length=1, max_length=3)


class SentimentDraft(BaseModel):
    """The sentiment prompt's output."""

    model_config = ConfigDict(extra="forbid")

    overall: SentimentLabel
    score: float = Field(ge=-1, le=1, description="-1 very negative .. 1 very positive.")
    sentences: list[int] = Field(min_length=1, max_length=3, description="Sentences that best show the tone.")
    entities: list[EntitySentimentDraft] = Field(default_factory=list, max_length=8)


class EntitySentiment(BaseModel):
    entity: str
    label: SentimentLabel
    score: float
    citations: list[SentenceQuote]


class Sentiment(BaseModel):
    """Verified sentiment of one article."""

    overall: SentimentLabel
    score: float
    citations: list[SentenceQuote]
    entities: list[EntitySentiment] = Field(default_factory=list)
