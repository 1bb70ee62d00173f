"""lock holders: which process start holds a running job or an in-flight Idempotency-Key

Revision ID: 0003_lock_holders
Revises: 0002_job_engine
Create Date: 2025-11-26

``lock_owner`` is a process's stable name (host and ``NEWSDIGEST_WORKER_NAME``), ``lock_run`` the
start of that process. A process that starts again under the same name finds the locks its dead
predecessor held and gives them back at once, instead of leaving jobs to ``job_lock_timeout_s`` and
keys to answer 409 until they go stale. Nullable: rows locked before this revision have no holder,
and are recovered by the timeouts as before.

Revisions are only ever added.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_lock_holders"
down_revision: str | None = "0002_job_engine"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("jobs", "idempotency_keys"):
        op.add_column(table, sa.Column("lock_owner", sa.String(255), nullable=True))
        op.add_column(table, sa.Column("lock_run", sa.String(64), nullable=True))
    op.create_index("ix_idempotency_keys_lock_owner", "idempotency_keys", ["lock_owner"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_lock_owner", table_name="idempotency_keys")
    for table in ("idempotency_keys", "jobs"):
        op.drop_column(table, "lock_run")  # SQLite drops a column in place since 3.35
        op.drop_column(table, "lock_owner")
