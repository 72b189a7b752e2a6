"""Add the refresh lease to tiktok.accounts: the token refresh no longer holds a row lock across HTTP.

Revision ID: 0003
Revises: 0001
Create Date: 2026-03-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "tiktok"


def upgrade() -> None:
    # Nullable columns without defaults: adding them rewrites nothing and locks the table only briefly.
    op.add_column("accounts", sa.Column("refresh_lease_owner", sa.Text()), schema=SCHEMA)
    op.add_column("accounts", sa.Column("refresh_lease_until", sa.DateTime(timezone=True)), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("accounts", "refresh_lease_until", schema=SCHEMA)
    op.drop_column("accounts", "refresh_lease_owner", schema=SCHEMA)
