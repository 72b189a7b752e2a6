"""``accounts.refresh_expiry_estimated``: whether the refresh token's expiry is TikTok's or ours.

When TikTok's token answer does not state ``refresh_expires_in``, the expiry is estimated (the
documented 180 days). The daily consent check marked accounts ``reauth_required`` once that
estimate passed: an account was condemned on a guess. Now only a stated expiry condemns an account;
an estimated one is tried, and TikTok refusing the refresh token is what marks it.

Rows stored before this revision cannot tell which they hold, so they start as estimated: none
is condemned on a guess, and the next refresh (every few hours for a used account) records what
TikTok states.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "accounts",
        sa.Column("refresh_expiry_estimated", sa.Boolean(), nullable=False, server_default=sa.true()),
        schema="tiktok",
    )
    # Rows from now on say what they hold; the existing ones were all set to estimated above.
    op.alter_column("accounts", "refresh_expiry_estimated", server_default=sa.false(), schema="tiktok")


def downgrade() -> None:
    op.drop_column("accounts", "refresh_expiry_estimated", schema="tiktok")
