"""The accounts UI: the 'disconnected' status, when accounts were authorized and disconnected, OAuth states.

Revision ID: 0005
Revises: 0003
Create Date: 2026-02-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "tiktok"


def upgrade() -> None:
    op.add_column("accounts", sa.Column("authorized_at", sa.DateTime(timezone=True)), schema=SCHEMA)
    op.add_column("accounts", sa.Column("disconnected_at", sa.DateTime(timezone=True)), schema=SCHEMA)
    op.drop_constraint(op.f("ck_accounts_status"), "accounts", schema=SCHEMA, type_="check")
    op.create_check_constraint(
        op.f("ck_accounts_status"),
        "accounts",
        "status IN ('active', 'reauth_required', 'disabled', 'disconnected')",
        schema=SCHEMA,
    )

    op.create_table(
        "oauth_states",
        sa.Column("state_hash", sa.Text(), nullable=False),
        sa.Column("session_hash", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("code_verifier_enc", sa.LargeBinary(), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("expected_open_id", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_oauth_states")),
        schema=SCHEMA,
    )
    op.create_index(op.f("ix_oauth_states_expires_at"), "oauth_states", ["expires_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index(op.f("ix_oauth_states_expires_at"), table_name="oauth_states", schema=SCHEMA)
    op.drop_table("oauth_states", schema=SCHEMA)
    # The older schema has no 'disconnected': such accounts come back as 'disabled' (never synced).
    op.execute(f"UPDATE {SCHEMA}.accounts SET status = 'disabled' WHERE status = 'disconnected'")
    op.drop_constraint(op.f("ck_accounts_status"), "accounts", schema=SCHEMA, type_="check")
    op.create_check_constraint(
        op.f("ck_accounts_status"),
        "accounts",
        "status IN ('active', 'reauth_required', 'disabled')",
        schema=SCHEMA,
    )
    op.drop_column("accounts", "disconnected_at", schema=SCHEMA)
    op.drop_column("accounts", "authorized_at", schema=SCHEMA)
