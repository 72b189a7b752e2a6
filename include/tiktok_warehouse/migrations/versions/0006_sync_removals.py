"""Keep what decides a sync's removals in its checkpoint, so every retry judges with the same facts.

``sync_state.unidentified`` counts the videos the sync met without a usable id, over every try:
while it is not zero the sync marks nothing removed. ``listed_at`` records that the listing
ended and its removal suspects (``sync_seen_videos.suspect``) are stored; they are marked removed
only once video/query confirms them gone, and ``removal_suspects`` / ``suspects_live`` / ``removed``
count what became of them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "tiktok"


def upgrade() -> None:
    # Nullable columns or constant defaults: Postgres adds them without rewriting the tables.
    op.add_column(
        "sync_state",
        sa.Column("unidentified", sa.Integer(), nullable=False, server_default=sa.text("0")),
        schema=SCHEMA,
    )
    op.add_column("sync_state", sa.Column("listed_at", sa.DateTime(timezone=True)), schema=SCHEMA)
    op.add_column("sync_state", sa.Column("removal_suspects", sa.Integer()), schema=SCHEMA)
    op.add_column(
        "sync_state",
        sa.Column("suspects_live", sa.Integer(), nullable=False, server_default=sa.text("0")),
        schema=SCHEMA,
    )
    op.add_column(
        "sync_seen_videos",
        sa.Column("suspect", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("sync_seen_videos", "suspect", schema=SCHEMA)
    for name in ("suspects_live", "removal_suspects", "listed_at", "unidentified"):
        op.drop_column("sync_state", name, schema=SCHEMA)
