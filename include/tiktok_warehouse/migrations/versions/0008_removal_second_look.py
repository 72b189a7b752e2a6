"""A removal needs a second look in a later run: store when a video first went missing.

``videos.missing_since`` is when video/query first left a live video out; a listing or query that
returns the video clears it, and the video is marked removed only when a later run, at least an
hour after that, finds it missing again. ``sync_seen_videos.missing_at`` is when video/query left a
sync's suspect out (judged when the sync finishes), and ``sync_state.removals_pending`` /
``removals_held`` count the suspects left for a later run and the removals held back because they
were too large a share of the account.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "tiktok"


def upgrade() -> None:
    # Nullable columns or constant defaults: Postgres adds them without rewriting the tables.
    op.add_column("videos", sa.Column("missing_since", sa.DateTime(timezone=True)), schema=SCHEMA)
    op.add_column("sync_seen_videos", sa.Column("missing_at", sa.DateTime(timezone=True)), schema=SCHEMA)
    for name in ("removals_pending", "removals_held"):
        op.add_column(
            "sync_state",
            sa.Column(name, sa.Integer(), nullable=False, server_default=sa.text("0")),
            schema=SCHEMA,
        )


def downgrade() -> None:
    for name in ("removals_held", "removals_pending"):
        op.drop_column("sync_state", name, schema=SCHEMA)
    op.drop_column("sync_seen_videos", "missing_at", schema=SCHEMA)
    op.drop_column("videos", "missing_since", schema=SCHEMA)
