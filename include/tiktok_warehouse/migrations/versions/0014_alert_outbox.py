"""``alert_outbox``: a run's account-task failure messages, so that a storm becomes one digest.

Up to 500 accounts run as one task each; a TikTok outage failed every one of them and sent on-call
one message per account. The first few of a run are still sent one by one; the rest are recorded
here and sent as one digest by the run's ``alert_digest`` task.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_outbox",
        sa.Column("dedupe_key", sa.Text(), nullable=False),
        sa.Column("dag_id", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("alert", postgresql.JSONB(), nullable=False),
        sa.Column("folded", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("kind IN ('task_failed', 'digest')", name=op.f("ck_alert_outbox_kind")),
        sa.PrimaryKeyConstraint("dedupe_key", name=op.f("pk_alert_outbox")),
        schema="tiktok",
    )
    op.create_index(op.f("ix_alert_outbox_dag_id_run_id"), "alert_outbox", ["dag_id", "run_id"], schema="tiktok")


def downgrade() -> None:
    op.drop_table("alert_outbox", schema="tiktok")
