"""An article as the CMS sends it, and as the pipeline prepares it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ArticleIn(BaseModel):
    """One article from the CMS: plain text or HTML."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=200, description="The CMS's own id for the article.")
    story_id: str | None = Field(default=None, max_length=200, description="The story it belongs to.")
    outlet: str = Field(min_length=1, max_length=200, description="Publication that wrote it.")
    title: str = Field(default="", max_length=1000)
    body: str = Field(description="Article text, or HTML when content_type is html.")
    content_type: Literal["text", "html"] = "text"
    url: str | None = Field(default=None, max_length=2000)
    published_at: datetime | None = None
    language: str | None = Field(default=None, max_length=20, description="BCP 47 tag if the CMS knows it.")


class Sentence(BaseModel):
    """One numbered sentence of the prepared text, with its character span."""

    model_config = ConfigDict(frozen=True)

    n: int = Field(ge=1, description="1-based number shown to the model as [n].")
    text: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class PreparedArticle(BaseModel):
    """The text every later stage reads: clean, numbered, hashed."""

    model_config = ConfigDict(frozen=True)

    outlet: str
    title: str
    url: str | None = None
    published_at: datetime | None = None
    language: str | None = None
    story_id: str | None = None
    cms_id: str | None = None
    text: str
    sentences: tuple[Sentence, ...]
    content_hash: str = Field(description="sha256 of the prepared text.")

    def sentence(self, n: int) -> Sentence:
        return self.sentences[n - 1]
