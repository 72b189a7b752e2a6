"""``profile_snapshots.checked_at``: when the account's profile was last fetched for that day's row.

A snapshot whose numbers did not change keeps its first ``captured_at`` (rerunning a run leaves
the rows as one clean run), so a cleared batch could not tell an account checked in this run from
one not yet done, and asked TikTok again. ``checked_at`` moves on every fetch; existing rows start
at their ``captured_at``.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("profile_snapshots", sa.Column("checked_at", sa.DateTime(timezone=True)), schema="tiktok")
    op.execute("UPDATE tiktok.profile_snapshots SET checked_at = captured_at")


def downgrade() -> None:
    op.drop_column("profile_snapshots", "checked_at", schema="tiktok")
