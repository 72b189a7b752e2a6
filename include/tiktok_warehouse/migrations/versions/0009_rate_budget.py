"""The cluster-wide API rate budget: slots with leases, and a shared pause per app and endpoint.

``rate_budget_slots`` holds ``limit`` rows per (app, endpoint); a slot is free when ``free_at`` has
passed. Taking one sets ``free_at`` to one window ahead (its lease: a worker that dies holding it
blocks nobody for longer), and the answer coming back sets it to one window after that, as the API
counts. ``rate_budget_state`` is, per app and endpoint, when a 429 lets the app's processes send
again (``paused_until``) and until when a waiting caller above bulk keeps bulk callers out
(``wanted_until``).
``app`` is a hash of the API host and client key, never the key itself.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "tiktok"


def upgrade() -> None:
    op.create_table(
        "rate_budget_slots",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("slot_no", sa.Integer(), nullable=False),
        sa.Column("free_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("holder", sa.Text()),
        sa.PrimaryKeyConstraint("app", "endpoint", "slot_no", name="pk_rate_budget_slots"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_rate_budget_slots_app_endpoint_free_at", "rate_budget_slots", ["app", "endpoint", "free_at"], schema=SCHEMA
    )
    op.create_table(
        "rate_budget_state",
        sa.Column("app", sa.Text(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("paused_until", sa.DateTime(timezone=True)),
        sa.Column("wanted_until", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("app", "endpoint", name="pk_rate_budget_state"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("rate_budget_state", schema=SCHEMA)
    op.drop_index("ix_rate_budget_slots_app_endpoint_free_at", table_name="rate_budget_slots", schema=SCHEMA)
    op.drop_table("rate_budget_slots", schema=SCHEMA)
