"""Webhook events in both directions: what the CMS sends us, and what we send back.

Both follow Standard Webhooks: a JSON envelope ``{type, timestamp, data}`` signed over the raw body.
The CMS's article events carry an ``ArticleIn`` (its own ``id`` required, since updates and
deletions are matched on it); our one outgoing event tells the CMS that a story's digest changed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.article import ArticleIn, Text

CMS_EVENT_TYPES = ("article.published", "article.updated", "article.deleted")


class CmsArticle(ArticleIn):
    """An article as a CMS event carries it: like ``ArticleIn``, but the CMS's ``id`` is required."""

    id: Text = Field(min_length=1, max_length=200, description="The CMS's own id for the article.")


class DeletedArticle(BaseModel):
    """Enough to find the article a CMS deleted; any other fields sent along are ignored."""

    model_config = ConfigDict(extra="ignore")

    id: Text = Field(min_length=1, max_length=200, description="The CMS's own id for the article.")
    story_id: Text | None = Field(
        default=None, max_length=200, description="Its story; the stored article's story is used when absent."
    )


class _Envelope(BaseModel):
    # Unknown top-level keys are tolerated: senders add envelope fields without telling receivers.
    model_config = ConfigDict(extra="ignore")

    timestamp: datetime = Field(description="When the event happened at the CMS.")


class ArticlePublished(_Envelope):
    type: Literal["article.published"]
    data: CmsArticle


class ArticleUpdated(_Envelope):
    type: Literal["article.updated"]
    data: CmsArticle


class ArticleDeleted(_Envelope):
    type: Literal["article.deleted"]
    data: DeletedArticle


CmsEvent = Annotated[ArticlePublished | ArticleUpdated | ArticleDeleted, Field(discriminator="type")]


class WebhookAck(BaseModel):
    """The answer to a CMS event: taken on (analysis and story refresh queued), a redelivery, or ignored."""

    status: Literal["accepted", "duplicate", "ignored"] = Field(
        description="duplicate: this webhook-id was handled before; ignored: an event type we do not act on."
    )
    article_id: str | None = Field(default=None, description="Our id of the article the event touched.")
    job_ids: list[str] = Field(default_factory=list, description="Jobs queued (or joined) for it.")


class DigestUpdatedData(BaseModel):
    story_id: str
    digest_id: str
    headline: str
    url: str = Field(description="Path of the digest on this service, e.g. /v1/digests/{digest_id}.")


class DigestUpdated(BaseModel):
    """Sent to ``NEWSDIGEST_CALLBACK_URL`` when a story's current digest changes."""

    type: Literal["digest.updated"] = "digest.updated"
    timestamp: datetime = Field(description="When the digest was built.")
    data: DigestUpdatedData
