"""Tables of the source of truth: articles, extractions, model calls, digests, jobs, deliveries.

Rows stay inside ``service.store``: each noun module turns them into schemas or frozen records, so
a route can never lazy-load, mutate or leak a row. Ids are uuid4 strings (they appear in URLs and
must not reveal counts), JSON maps to JSONB on PostgreSQL, and every timestamp is timezone-aware
UTC on both databases. Migrations under ``service/migrations`` must create exactly this metadata
(a test compares them); change a table by adding a revision.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from schemas.api import JobStatus as JobStatus  # the jobs table lives here; its statuses are the API's

# none_as_null: a missing result is SQL NULL, not the JSON literal 'null'.
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class JobKind(StrEnum):
    """What a job does; each kind is one function in the worker's registry (``service.jobs.worker``)."""

    ANALYZE_ARTICLE = "analyze_article"
    BUILD_DIGEST = "build_digest"
    REFRESH_STORY = "refresh_story"
    SEND_CALLBACK = "send_callback"


class Preparation(StrEnum):
    """Where an article's text stands: ``pending`` as received (the intake stores the CMS's body as is),
    ``prepared`` once the analysis job has numbered its sentences, ``unusable`` when it has none."""

    PENDING = "pending"
    PREPARED = "prepared"
    UNUSABLE = "unusable"


# Plain strings: the constraints below are rendered into SQL with repr().
JOB_STATUSES = tuple(status.value for status in JobStatus)
IDEMPOTENCY_STATUSES = ("processing", "done")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """``timestamptz`` on PostgreSQL; on SQLite, naive UTC text given back as aware UTC.

    SQLite has no time zone type and SQLAlchemy drops the offset when it writes, so values are
    converted to UTC first: that keeps text comparisons (``run_after <= now``) correct. A naive
    value is taken to be UTC, which is what a CMS sending ``2025-01-01T10:00:00`` usually means.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    # Fixed constraint names, so later revisions can drop or alter them on both databases.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


def _id() -> Mapped[str]:
    return mapped_column(String(36), primary_key=True, default=new_id)


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow)


class Article(Base):
    __tablename__ = "articles"

    id: Mapped[str] = _id()
    cms_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    story_id: Mapped[str | None] = mapped_column(String(200), index=True)
    outlet: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    language: Mapped[str | None] = mapped_column(String(20))
    # The prepared text: empty ('' and []) while ``preparation`` is pending or unusable.
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    text: Mapped[str] = mapped_column(Text)
    sentences: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    # Revision 0004: the intake stores what the CMS sent and the analysis job prepares it. Rows stored
    # before it were prepared on arrival: 'prepared', without a body or source hash.
    preparation: Mapped[str] = mapped_column(String(16), default=Preparation.PREPARED.value,
                                             server_default=Preparation.PREPARED.value)
    preparation_error: Mapped[str | None] = mapped_column(Text)
    #: The body as received, until it is prepared (kept when unusable, to show what came).
    body: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str | None] = mapped_column(String(10))
    #: sha256 of what preparing reads (outlet, title, content type, language, body), taken at intake.
    source_hash: Mapped[str | None] = mapped_column(String(64))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Extraction(Base):
    __tablename__ = "extractions"

    id: Mapped[str] = _id()
    article_id: Mapped[str] = mapped_column(ForeignKey("articles.id"), index=True)
    # Kept beside the key so an article with the same text finds the analysis another one paid for.
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    cache_key: Mapped[str] = mapped_column(String(64), unique=True)
    prompts: Mapped[dict[str, str]] = mapped_column(JSONType)
    model: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(20))
    result: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _created()


class Digest(Base):
    __tablename__ = "digests"
    __table_args__ = (
        # At most one current digest per story, whatever two racing writers do.
        Index(
            "uq_digests_current_story",
            "story_id",
            unique=True,
            sqlite_where=text("is_current"),
            postgresql_where=text("is_current"),
        ),
    )

    id: Mapped[str] = _id()
    story_id: Mapped[str | None] = mapped_column(String(200), index=True)
    cache_key: Mapped[str] = mapped_column(String(64), index=True)
    article_ids: Mapped[list[str]] = mapped_column(JSONType)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType)
    is_current: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = _created()


class LLMCall(Base):
    __tablename__ = "llm_calls"

    id: Mapped[str] = _id()
    extraction_id: Mapped[str | None] = mapped_column(
        ForeignKey("extractions.id", ondelete="SET NULL"), index=True
    )
    digest_id: Mapped[str | None] = mapped_column(ForeignKey("digests.id", ondelete="SET NULL"), index=True)
    prompt: Mapped[str] = mapped_column(String(100))
    prompt_hash: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    resolved_model: Mapped[str | None] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(20))
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    cached_tokens: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    # Revision 0004; NULL for calls stored before it, whose latency_ms included this wait.
    queue_ms: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer)
    finish_reason: Mapped[str | None] = mapped_column(String(50))
    outcome: Mapped[str] = mapped_column(String(20))
    cost_usd: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = _created()


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(f"status IN {JOB_STATUSES!r}", name="status"),
        # The claim query: queued jobs in run_after order.
        Index("ix_jobs_status_run_after", "status", "run_after"),
    )

    id: Mapped[str] = _id()
    # Not constrained in SQL: a new kind should not need a table rebuild on SQLite.
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    locked_by: Mapped[str | None] = mapped_column(String(200))
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Which process holds the lock: its stable name and its start, so that process's next start
    # can take back at once what it held when it died (service.jobs.context.LockHolder).
    lock_owner: Mapped[str | None] = mapped_column(String(255))
    lock_run: Mapped[str | None] = mapped_column(String(64))
    run_after: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    dedupe_key: Mapped[str | None] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    webhook_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (CheckConstraint(f"status IN {IDEMPOTENCY_STATUSES!r}", name="status"),)

    # Keys are scoped per API key: two CMS clients may pick the same Idempotency-Key.
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    api_key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="processing")
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[Any] = mapped_column(JSONType, nullable=True)
    # The process running the request while 'processing', as for a job's lock (Job.lock_owner).
    lock_owner: Mapped[str | None] = mapped_column(String(255), index=True)
    lock_run: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()
    # When the current attempt began or finished: a 'processing' row this old was abandoned.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, index=True)
