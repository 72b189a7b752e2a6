"""Early history, the cover archive and the analyst marts.

- ``video_captures``: every capture of a video younger than ``[tiktok] early_history_days``
  (default 14) from answers the backfill and the cover refresh already get; the views
  ``video_early_metrics`` (each video's counts at 1 h, 6 h, 24 h, 7 d, 28 d after posting: the
  nearest capture or daily snapshot within a tolerance, with its actual age) and
  ``account_early_medians`` (per account and mark, the medians).
- ``archive_blobs`` and ``cover_archive``: covers and avatars copied once per content (by SHA-256).
- The marts: plain views ``mart_account_daily_growth``, ``mart_video_engagement``,
  ``mart_posting_cadence``, ``mart_videos_removed_weekly``; materialized views
  ``mart_account_engagement`` and ``mart_top_videos_7d`` and the SECURITY DEFINER function
  ``tiktok.refresh_marts()`` that refreshes them (REFRESH needs the owner; the DAG role is not).

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "tiktok"

# The marks and the tolerance around each: the nearest observation whose age lies within
# mark +- tolerance counts; none within it gives no row for that mark (never a far-off value).
VIDEO_EARLY_METRICS = """
CREATE VIEW tiktok.video_early_metrics AS
WITH marks (mark, mark_age, tolerance) AS (
    VALUES ('1h', interval '1 hour', interval '1 hour'),
           ('6h', interval '6 hours', interval '3 hours'),
           ('24h', interval '24 hours', interval '6 hours'),
           ('7d', interval '7 days', interval '1 day'),
           ('28d', interval '28 days', interval '3 days')
),
observations AS (
    SELECT c.video_id, c.open_id, c.create_time, c.captured_at,
           c.view_count, c.like_count, c.comment_count, c.share_count, c.source
    FROM tiktok.video_captures AS c
    UNION ALL
    SELECT s.video_id, v.open_id, v.create_time, s.captured_at,
           s.view_count, s.like_count, s.comment_count, s.share_count, 'daily'
    FROM tiktok.video_snapshots AS s
    JOIN tiktok.videos AS v ON v.id = s.video_id
    WHERE v.create_time IS NOT NULL
)
SELECT DISTINCT ON (o.video_id, m.mark_age)
    o.video_id,
    o.open_id,
    o.create_time,
    m.mark,
    m.mark_age,
    o.captured_at,
    o.captured_at - o.create_time AS age,
    round(extract(epoch FROM o.captured_at - o.create_time) / 3600, 2) AS age_hours,
    o.view_count,
    o.like_count,
    o.comment_count,
    o.share_count,
    o.source
FROM observations AS o
JOIN marks AS m
    ON o.captured_at - o.create_time BETWEEN m.mark_age - m.tolerance AND m.mark_age + m.tolerance
ORDER BY o.video_id, m.mark_age, abs(extract(epoch FROM o.captured_at - o.create_time - m.mark_age)), o.captured_at
"""

ACCOUNT_EARLY_MEDIANS = """
CREATE VIEW tiktok.account_early_medians AS
SELECT
    e.open_id,
    e.mark,
    e.mark_age,
    count(*) AS videos,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY e.view_count) AS median_views,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY e.like_count) AS median_likes,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY e.comment_count) AS median_comments,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY e.share_count) AS median_shares,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY e.age_hours) AS median_age_hours
FROM tiktok.video_early_metrics AS e
GROUP BY e.open_id, e.mark, e.mark_age
"""

MART_ACCOUNT_DAILY_GROWTH = """
CREATE VIEW tiktok.mart_account_daily_growth AS
SELECT
    g.open_id,
    a.username,
    g.snapshot_date,
    g.follower_count,
    g.follower_count_delta AS follower_growth,
    g.likes_count,
    g.likes_count_delta AS likes_growth,
    g.days_since_previous,
    round(g.follower_count_delta::numeric / nullif(g.days_since_previous, 0), 2) AS follower_growth_per_day,
    round(g.likes_count_delta::numeric / nullif(g.days_since_previous, 0), 2) AS likes_growth_per_day
FROM tiktok.account_daily_growth AS g
JOIN tiktok.accounts AS a ON a.open_id = g.open_id
"""

MART_VIDEO_ENGAGEMENT = """
CREATE VIEW tiktok.mart_video_engagement AS
SELECT
    s.video_id,
    s.open_id,
    s.username,
    s.title,
    s.create_time,
    s.view_count,
    s.like_count,
    s.comment_count,
    s.share_count,
    -- numeric: three int64 counts can add up past bigint.
    coalesce(s.like_count, 0)::numeric + coalesce(s.comment_count, 0) + coalesce(s.share_count, 0) AS interactions,
    round(
        (coalesce(s.like_count, 0)::numeric + coalesce(s.comment_count, 0) + coalesce(s.share_count, 0))
        / nullif(s.view_count, 0),
        4
    ) AS engagement_rate,
    s.removed_at
FROM tiktok.video_latest_stats AS s
"""

MART_POSTING_CADENCE = """
CREATE VIEW tiktok.mart_posting_cadence AS
WITH posts AS (
    SELECT
        v.open_id,
        v.create_time,
        v.create_time - lag(v.create_time) OVER (PARTITION BY v.open_id ORDER BY v.create_time) AS gap
    FROM tiktok.videos AS v
    WHERE v.create_time IS NOT NULL
)
SELECT
    p.open_id,
    count(*) AS posts,
    min(p.create_time) AS first_post_at,
    max(p.create_time) AS last_post_at,
    round(count(*) / greatest(extract(epoch FROM max(p.create_time) - min(p.create_time)) / 604800, 1), 2)
        AS posts_per_week,
    round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM p.gap) / 3600))::numeric, 2)
        AS median_gap_hours
FROM posts AS p
GROUP BY p.open_id
"""

MART_VIDEOS_REMOVED_WEEKLY = """
CREATE VIEW tiktok.mart_videos_removed_weekly AS
SELECT
    v.open_id,
    date_trunc('week', v.removed_at AT TIME ZONE 'UTC')::date AS week_start,
    count(*) AS videos_removed
FROM tiktok.videos AS v
WHERE v.removed_at IS NOT NULL
GROUP BY v.open_id, date_trunc('week', v.removed_at AT TIME ZONE 'UTC')::date
"""

MART_ACCOUNT_ENGAGEMENT = """
CREATE MATERIALIZED VIEW tiktok.mart_account_engagement AS
SELECT
    a.open_id,
    a.username,
    count(e.video_id) AS videos,
    coalesce(sum(e.view_count), 0) AS views,
    coalesce(sum(e.interactions), 0) AS interactions,
    round(sum(e.interactions)::numeric / nullif(sum(e.view_count), 0), 4) AS engagement_rate,
    round((percentile_cont(0.5) WITHIN GROUP (ORDER BY e.engagement_rate))::numeric, 4)
        AS median_video_engagement_rate,
    now() AS refreshed_at
FROM tiktok.accounts AS a
LEFT JOIN tiktok.mart_video_engagement AS e ON e.open_id = a.open_id AND e.removed_at IS NULL
GROUP BY a.open_id, a.username
"""

# Views gained over the 7 UTC days to the refresh: the latest daily snapshot minus the last one at
# least 7 days older (0 for a video posted inside the window); live videos only.
MART_TOP_VIDEOS_7D = """
CREATE MATERIALIZED VIEW tiktok.mart_top_videos_7d AS
WITH params AS (
    SELECT (now() AT TIME ZONE 'UTC')::date AS today
),
latest AS (
    SELECT DISTINCT ON (s.video_id) s.video_id, s.snapshot_date, s.view_count
    FROM tiktok.video_snapshots AS s, params AS p
    WHERE s.snapshot_date <= p.today
    ORDER BY s.video_id, s.snapshot_date DESC
),
base AS (
    SELECT DISTINCT ON (s.video_id) s.video_id, s.view_count
    FROM tiktok.video_snapshots AS s, params AS p
    WHERE s.snapshot_date <= p.today - 7
    ORDER BY s.video_id, s.snapshot_date DESC
),
gained AS (
    SELECT
        v.id AS video_id,
        v.open_id,
        v.title,
        v.create_time,
        l.snapshot_date AS as_of,
        l.view_count,
        l.view_count - coalesce(b.view_count, 0) AS views_7d
    FROM latest AS l
    CROSS JOIN params AS p
    JOIN tiktok.videos AS v ON v.id = l.video_id
    LEFT JOIN base AS b ON b.video_id = l.video_id
    WHERE v.removed_at IS NULL
      AND l.snapshot_date > p.today - 7
      AND (b.video_id IS NOT NULL OR v.create_time >= (p.today - 7)::timestamp AT TIME ZONE 'UTC')
)
SELECT
    g.*,
    rank() OVER (PARTITION BY g.open_id ORDER BY g.views_7d DESC) AS account_rank,
    rank() OVER (ORDER BY g.views_7d DESC) AS overall_rank,
    now() AS refreshed_at
FROM gained AS g
"""

REFRESH_MARTS = """
CREATE FUNCTION tiktok.refresh_marts() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY tiktok.mart_account_engagement;
    REFRESH MATERIALIZED VIEW CONCURRENTLY tiktok.mart_top_videos_7d;
END
$$
"""


def _ts(name: str, *, nullable: bool = True, primary_key: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, primary_key=primary_key)


def upgrade() -> None:
    op.create_table(
        "video_captures",
        sa.Column("video_id", sa.Text(), nullable=False),
        _ts("captured_at", nullable=False),
        sa.Column("open_id", sa.Text(), nullable=False),
        _ts("create_time", nullable=False),
        sa.Column("view_count", sa.BigInteger()),
        sa.Column("like_count", sa.BigInteger()),
        sa.Column("comment_count", sa.BigInteger()),
        sa.Column("share_count", sa.BigInteger()),
        sa.Column("source", sa.Text(), nullable=False),
        sa.CheckConstraint("source IN ('list', 'query')", name="source"),
        sa.ForeignKeyConstraint(
            ["open_id"],
            [f"{SCHEMA}.accounts.open_id"],
            name="fk_video_captures_open_id_accounts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("video_id", "captured_at", name="pk_video_captures"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_video_captures_open_id_captured_at", "video_captures", ["open_id", "captured_at"], schema=SCHEMA
    )
    op.create_table(
        "archive_blobs",
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False),
        _ts("stored_at", nullable=False),
        sa.CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name="sha256"),
        sa.PrimaryKeyConstraint("sha256", name="pk_archive_blobs"),
        schema=SCHEMA,
    )
    op.create_table(
        "cover_archive",
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("subject_id", sa.Text(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("open_id", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("etag", sa.Text()),
        _ts("archived_at", nullable=False),
        _ts("checked_at", nullable=False),
        sa.CheckConstraint("kind IN ('cover', 'avatar')", name="kind"),
        sa.ForeignKeyConstraint(
            ["sha256"], [f"{SCHEMA}.archive_blobs.sha256"], name="fk_cover_archive_sha256_archive_blobs"
        ),
        sa.ForeignKeyConstraint(
            ["open_id"],
            [f"{SCHEMA}.accounts.open_id"],
            name="fk_cover_archive_open_id_accounts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("kind", "subject_id", "sha256", name="pk_cover_archive"),
        schema=SCHEMA,
    )
    op.create_index("ix_cover_archive_open_id", "cover_archive", ["open_id"], schema=SCHEMA)
    for sql in (
        VIDEO_EARLY_METRICS,
        ACCOUNT_EARLY_MEDIANS,
        MART_ACCOUNT_DAILY_GROWTH,
        MART_VIDEO_ENGAGEMENT,
        MART_POSTING_CADENCE,
        MART_VIDEOS_REMOVED_WEEKLY,
        MART_ACCOUNT_ENGAGEMENT,
        MART_TOP_VIDEOS_7D,
    ):
        op.execute(sql)
    # REFRESH ... CONCURRENTLY needs a unique index; readers are never blocked by a refresh.
    op.execute("CREATE UNIQUE INDEX uq_mart_account_engagement_open_id ON tiktok.mart_account_engagement (open_id)")
    op.execute("CREATE UNIQUE INDEX uq_mart_top_videos_7d_video_id ON tiktok.mart_top_videos_7d (video_id)")
    op.execute(REFRESH_MARTS)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {SCHEMA}.refresh_marts()")
    for name in ("mart_top_videos_7d", "mart_account_engagement"):
        op.execute(f"DROP MATERIALIZED VIEW IF EXISTS {SCHEMA}.{name}")
    for name in (
        "mart_videos_removed_weekly",
        "mart_posting_cadence",
        "mart_video_engagement",
        "mart_account_daily_growth",
        "account_early_medians",
        "video_early_metrics",
    ):
        op.execute(f"DROP VIEW IF EXISTS {SCHEMA}.{name}")
    op.drop_table("cover_archive", schema=SCHEMA)
    op.drop_table("archive_blobs", schema=SCHEMA)
    op.drop_table("video_captures", schema=SCHEMA)
