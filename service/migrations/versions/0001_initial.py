"""initial: articles, extractions, digests, llm_calls, jobs, webhook_deliveries, idempotency_keys

Revision ID: 0001_initial
Revises:
Create Date: 2025-11-23

Written out in full rather than imported from service.store.models: a revision must keep creating
the same tables after the models have moved on. Revisions are only ever added.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _ts(name: str, nullable: bool = False) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "articles",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("cms_id", sa.String(200), nullable=True),
        sa.Column("story_id", sa.String(200), nullable=True),
        sa.Column("outlet", sa.String(200), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        _ts("published_at", nullable=True),
        sa.Column("language", sa.String(20), nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sentences", JSON, nullable=False),
        _ts("deleted_at", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_articles"),
        sa.UniqueConstraint("cms_id", name="uq_articles_cms_id"),
    )
    op.create_index("ix_articles_story_id", "articles", ["story_id"])
    op.create_index("ix_articles_content_hash", "articles", ["content_hash"])

    op.create_table(
        "extractions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("article_id", sa.String(36), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("cache_key", sa.String(64), nullable=False),
        sa.Column("prompts", JSON, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("result", JSON, nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_extractions"),
        sa.ForeignKeyConstraint(["article_id"], ["articles.id"], name="fk_extractions_article_id_articles"),
        sa.UniqueConstraint("cache_key", name="uq_extractions_cache_key"),
    )
    op.create_index("ix_extractions_article_id", "extractions", ["article_id"])
    op.create_index("ix_extractions_content_hash", "extractions", ["content_hash"])

    op.create_table(
        "digests",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("story_id", sa.String(200), nullable=True),
        sa.Column("cache_key", sa.String(64), nullable=False),
        sa.Column("article_ids", JSON, nullable=False),
        sa.Column("result", JSON, nullable=False),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_digests"),
    )
    op.create_index("ix_digests_story_id", "digests", ["story_id"])
    op.create_index("ix_digests_cache_key", "digests", ["cache_key"])
    op.create_index(
        "uq_digests_current_story",
        "digests",
        ["story_id"],
        unique=True,
        sqlite_where=sa.text("is_current"),
        postgresql_where=sa.text("is_current"),
    )

    op.create_table(
        "llm_calls",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("extraction_id", sa.String(36), nullable=True),
        sa.Column("digest_id", sa.String(36), nullable=True),
        sa.Column("prompt", sa.String(100), nullable=False),
        sa.Column("prompt_hash", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("resolved_model", sa.String(200), nullable=True),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("finish_reason", sa.String(50), nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_llm_calls"),
        sa.ForeignKeyConstraint(
            ["extraction_id"], ["extractions.id"], name="fk_llm_calls_extraction_id_extractions", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["digest_id"], ["digests.id"], name="fk_llm_calls_digest_id_digests", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_llm_calls_extraction_id", "llm_calls", ["extraction_id"])
    op.create_index("ix_llm_calls_digest_id", "llm_calls", ["digest_id"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("locked_by", sa.String(200), nullable=True),
        _ts("locked_at", nullable=True),
        _ts("run_after"),
        sa.Column("dedupe_key", sa.String(255), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed')", name=op.f("ck_jobs_status")
        ),
    )
    op.create_index("ix_jobs_status_run_after", "jobs", ["status", "run_after"])
    op.create_index("ix_jobs_dedupe_key", "jobs", ["dedupe_key"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("webhook_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        _ts("received_at"),
        sa.PrimaryKeyConstraint("webhook_id", name="pk_webhook_deliveries"),
    )
    op.create_index("ix_webhook_deliveries_received_at", "webhook_deliveries", ["received_at"])

    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("api_key_hash", sa.String(64), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", JSON, nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("key", "api_key_hash", name="pk_idempotency_keys"),
        sa.CheckConstraint("status IN ('processing', 'done')", name=op.f("ck_idempotency_keys_status")),
    )
    op.create_index("ix_idempotency_keys_updated_at", "idempotency_keys", ["updated_at"])


def downgrade() -> None:
    for table in ("idempotency_keys", "webhook_deliveries", "jobs", "llm_calls", "digests", "extractions", "articles"):
        op.drop_table(table)
