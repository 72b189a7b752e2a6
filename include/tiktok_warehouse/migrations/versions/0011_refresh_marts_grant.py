"""``tiktok.refresh_marts()`` is no longer executable by every role.

A function is executable by PUBLIC when created; this one is SECURITY DEFINER (it runs as the marts'
owner), so any role with USAGE on schema ``tiktok`` -- an analyst's read-only one -- could start the
two heavy refreshes as often as it liked. Only the owner and the roles granted EXECUTE (the DAGs'
role: ``tiktok_ops.dag_role`` grants it) may now call it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("REVOKE EXECUTE ON FUNCTION tiktok.refresh_marts() FROM PUBLIC")


def downgrade() -> None:
    op.execute("GRANT EXECUTE ON FUNCTION tiktok.refresh_marts() TO PUBLIC")
