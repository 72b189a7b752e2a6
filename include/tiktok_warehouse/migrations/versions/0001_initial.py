"""Create the tiktok schema: accounts, snapshots, videos, sync checkpoints and the analyst views.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "tiktok"

ACCOUNT_DAILY_GROWTH = """
CREATE VIEW tiktok.account_daily_growth AS
SELECT
    s.open_id,
    s.snapshot_date,
    s.follower_count,
    s.follower_count - lag(s.follower_count) OVER w AS follower_count_delta,
    s.likes_count,
    s.likes_count - lag(s.likes_count) OVER w AS likes_count_delta,
    s.video_count,
    s.video_count - lag(s.video_count) OVER w AS video_count_delta,
    s.snapshot_date - lag(s.snapshot_date) OVER w AS days_since_previous,
    s.captured_at
FROM tiktok.profile_snapshots AS s
WINDOW w AS (PARTITION BY s.open_id ORDER BY s.snapshot_date)
"""

VIDEO_LATEST_STATS = """
CREATE VIEW tiktok.video_latest_stats AS
SELECT
    v.id AS video_id,
    v.open_id,
    a.username,
    a.display_name,
    v.title,
    v.create_time,
    v.share_url,
    v.cover_image_url,
    v.cover_expires_at,
    coalesce(v.cover_expires_at > now(), false) AS cover_is_fresh,
    s.snapshot_date AS stats_date,
    coalesce(s.like_count, v.like_count) AS like_count,
    coalesce(s.comment_count, v.comment_count) AS comment_count,
    coalesce(s.share_count, v.share_count) AS share_count,
    coalesce(s.view_count, v.view_count) AS view_count,
    s.captured_at AS stats_captured_at,
    v.last_seen_at,
    v.removed_at
FROM tiktok.videos AS v
JOIN tiktok.accounts AS a ON a.open_id = v.open_id
LEFT JOIN LATERAL (
    SELECT vs.snapshot_date, vs.like_count, vs.comment_count, vs.share_count, vs.view_count, vs.captured_at
    FROM tiktok.video_snapshots AS vs
    WHERE vs.video_id = v.id
    ORDER BY vs.snapshot_date DESC
    LIMIT 1
) AS s ON true
"""


def _ts(name: str, *, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")

    op.create_table(
        "accounts",
        sa.Column("open_id", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text()),
        sa.Column("username", sa.Text()),
        sa.Column("avatar_url", sa.Text()),
        sa.Column("status", sa.Text(), nullable=False, server_default=sa.text("'active'")),
        sa.Column("status_reason", sa.Text()),
        sa.Column(
            "scopes",
            postgresql.ARRAY(sa.Text()),
            nullable=False,
            server_default=sa.text("'{}'::text[]"),
        ),
        _ts("connected_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.Column("access_token_enc", sa.LargeBinary(), nullable=False),
        sa.Column("refresh_token_enc", sa.LargeBinary(), nullable=False),
        _ts("access_expires_at", nullable=False),
        _ts("refresh_expires_at", nullable=False),
        sa.PrimaryKeyConstraint("open_id", name=op.f("pk_accounts")),
        sa.CheckConstraint(
            "status IN ('active', 'reauth_required', 'disabled')",
            name=op.f("ck_accounts_status"),
        ),
        schema=SCHEMA,
    )

    op.create_table(
        "profile_snapshots",
        sa.Column("open_id", sa.Text(), nullable=False),
        sa.Column("snapshot_date", sa.Date(), nullable=False),
        sa.Column("follower_count", sa.BigInteger()),
        sa.Column("following_count", sa.BigInteger()),
        sa.Column("likes_count", sa.BigInteger()),
        sa.Column("video_count", sa.BigInteger()),
        sa.Column("display_name", sa.Text()),
        sa.Column("bio_description", sa.Text()),
        sa.Column("avatar_url", sa.Text()),
        sa.Column("is_verified", sa.Boolean()),
        _ts("captured_at", nullable=False),
        sa.PrimaryKeyConstraint("open_id", "snapshot_date", name=op.f("pk_profile_snapshots")),
        sa.ForeignKeyConstraint(
            ["open_id"],
            [f"{SCHEMA}.accounts.open_id"],
            name=op.f("fk_profile_snapshots_open_id_accounts"),
            ondelete="CASCADE",
        ),
        schema=SCHEMA,
    )

    op.create_table(
        "videos",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("open_id", sa.Text(), nullable=False),
        _ts("create_time"),
        sa.Column("title", sa.Text()),
        sa.Column("video_description", sa.Text()),
        sa.Column("duration", sa.Integer()),
        sa.Column("height", sa.Integer()),
        sa.Column("width", sa.Integer()),
        sa.Column("share_url", sa.Text()),
        sa.Column("embed_link", sa.Text()),
        sa.Column("embed_html", sa.Text()),
        sa.Column("cover_image_url", sa.Text()),
        _ts("cover_expires_at"),
        sa.Column("like_count", sa.BigInteger()),
        sa.Column("comment_count", sa.BigInteger()),
        sa.Column("share_count", sa.BigInteger()),
        sa.Column("view_count", sa.BigInteger()),
        _ts("first_seen_at", nullable=False),
        _ts("last_seen_at", nullable=False),
        _ts("removed_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_videos")),
        sa.ForeignKeyConstraint(
            ["open_id"],
            [f"{SCHEMA}.accounts.open_id"],
            name=op.f("fk_videos_open_id_accounts"),
            ondelete="CASCADE",
        ),
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_videos_open_id_create_time"),
        "videos",
        ["open_id", "create_time"],
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_videos_open_id_cover_expires_at"),
        "videos",
        ["open_id", "cover_expires_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("removed_at IS NULL"),
    )

    op.create_table(
        "video_snapshots",
        sa.Column("video_id", sa.Text(), nullable=False),
        sa.Column("snapshot_date", sa.Date(), nullable=False),
        sa.Column("like_count", sa.BigInteger()),
        sa.Column("comment_count", sa.BigInteger()),
        sa.Column("share_count", sa.BigInteger()),
        sa.Column("view_count", sa.BigInteger()),
        _ts("captured_at", nullable=False),
        sa.PrimaryKeyConstraint("video_id", "snapshot_date", name=op.f("pk_video_snapshots")),
        sa.ForeignKeyConstraint(
            ["video_id"],
            [f"{SCHEMA}.videos.id"],
            name=op.f("fk_video_snapshots_video_id_videos"),
            ondelete="CASCADE",
        ),
        schema=SCHEMA,
    )

    op.create_table(
        "sync_state",
        sa.Column("sync_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("open_id", sa.Text(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("cursor", sa.BigInteger()),
        _ts("window_start"),
        _ts("started_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("finished_at"),
        sa.Column("pages", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("videos_seen", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("removed", sa.Integer()),
        sa.PrimaryKeyConstraint("sync_id", name=op.f("pk_sync_state")),
        sa.ForeignKeyConstraint(
            ["open_id"],
            [f"{SCHEMA}.accounts.open_id"],
            name=op.f("fk_sync_state_open_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("mode IN ('full', 'incremental')", name=op.f("ck_sync_state_mode")),
        sa.CheckConstraint(
            "mode = 'full' OR window_start IS NOT NULL",
            name=op.f("ck_sync_state_incremental_window"),
        ),
        schema=SCHEMA,
    )
    op.create_index(
        op.f("uq_sync_state_open_id_mode_unfinished"),
        "sync_state",
        ["open_id", "mode"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("finished_at IS NULL"),
    )

    op.create_table(
        "sync_seen_videos",
        sa.Column("sync_id", sa.BigInteger(), nullable=False),
        sa.Column("video_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("sync_id", "video_id", name=op.f("pk_sync_seen_videos")),
        sa.ForeignKeyConstraint(
            ["sync_id"],
            [f"{SCHEMA}.sync_state.sync_id"],
            name=op.f("fk_sync_seen_videos_sync_id_sync_state"),
            ondelete="CASCADE",
        ),
        schema=SCHEMA,
    )

    op.execute(ACCOUNT_DAILY_GROWTH)
    op.execute(VIDEO_LATEST_STATS)


def downgrade() -> None:
    # The schema itself stays: it holds Alembic's version table, which Alembic still writes to.
    op.execute(f"DROP VIEW IF EXISTS {SCHEMA}.video_latest_stats")
    op.execute(f"DROP VIEW IF EXISTS {SCHEMA}.account_daily_growth")
    op.drop_table("sync_seen_videos", schema=SCHEMA)
    op.drop_table("sync_state", schema=SCHEMA)
    op.drop_table("video_snapshots", schema=SCHEMA)
    op.drop_table("videos", schema=SCHEMA)
    op.drop_table("profile_snapshots", schema=SCHEMA)
    op.drop_table("accounts", schema=SCHEMA)
