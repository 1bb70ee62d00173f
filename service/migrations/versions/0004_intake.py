"""intake without preparation: articles as received, prepared by the analysis job; a call's queue time

Revision ID: 0004_intake
Revises: 0003_lock_holders
Create Date: 2026-12-01

The intake (``POST /v1/articles``, the CMS webhook) stores the article as the CMS sent it and the
analysis job prepares it (markup, sentences, hash). ``preparation`` says where a row stands:
``pending``, ``prepared`` or ``unusable`` (with ``preparation_error``). ``body`` and ``content_type``
hold what was received until it is prepared; ``source_hash`` is the sha256 of what preparing reads,
so an update that changes nothing keeps the prepared text. Rows stored before this revision were
prepared on arrival: the server default makes them ``prepared``.

``llm_calls.queue_ms``: the wait for a concurrency slot and the rate window, now kept out of
``latency_ms``. NULL for calls stored before, whose ``latency_ms`` included it.

Revisions are only ever added.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_intake"
down_revision: str | None = "0003_lock_holders"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("articles", sa.Column("preparation", sa.String(16), nullable=False, server_default="prepared"))
    op.add_column("articles", sa.Column("preparation_error", sa.Text(), nullable=True))
    op.add_column("articles", sa.Column("body", sa.Text(), nullable=True))
    op.add_column("articles", sa.Column("content_type", sa.String(10), nullable=True))
    op.add_column("articles", sa.Column("source_hash", sa.String(64), nullable=True))
    op.add_column("llm_calls", sa.Column("queue_ms", sa.Integer(), nullable=True))


def downgrade() -> None:
    # SQLite drops a column in place since 3.35. Pending rows have no prepared text to fall back on:
    # downgrading while articles wait to be prepared leaves them empty.
    op.drop_column("llm_calls", "queue_ms")
    for column in ("source_hash", "content_type", "body", "preparation_error", "preparation"):
        op.drop_column("articles", column)
