"""Keep what decides a sync's removals in its checkpoint, so every retry judges with the same facts.

``sync_state.unidentified`` counts the videos the sync met without a usable id, over every try:
while it is not zero the sync marks nothing removed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "tiktok"


def upgrade() -> None:
    # A constant default: Postgres adds the column without rewriting the table.
    op.add_column(
        "sync_state",
        sa.Column("unidentified", sa.Integer(), nullable=False, server_default=sa.text("0")),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("sync_state", "unidentified", schema=SCHEMA)
