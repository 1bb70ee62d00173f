"""Key facts: what the model drafts, and what the service publishes after verification."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FactDraft(BaseModel):
    """One fact as the model writes it: a claim and the sentence numbers it rests on."""

    model_config = ConfigDict(extra="forbid")

    claim: str = Field(min_length=1, max_length=400, description="One self-contained factual claim.")
    sentences: list[int] = Field(min_length=1, max_length=3, description="Numbers [n] of the sentences that state it.")


class KeyFactsDraft(BaseModel):
    """The key_facts prompt's output."""

    model_config = ConfigDict(extra="forbid")

    facts: list[FactDraft] = Field(max_length=12)


class SentenceQuote(BaseModel):
    """A cited sentence, with its exact text filled in by the service (never by the model)."""

    sentence: int = Field(ge=1)
    quote: str


class Fact(BaseModel):
    """A verified fact of one article."""

    id: str = Field(description="F1, F2, ... in the article's order.")
    claim: str
    citations: list[SentenceQuote] = Field(min_length=1, max_length=3)
    repaired_from: list[int] | None = Field(
        default=None,
        description="Set when the service moved the citation: the sentences the model had cited, "
        "which do not state it.",
    )


class Rejection(BaseModel):
    """A drafted item dropped after the re-ask, with the reasons."""

    item: str
    reasons: list[str]
