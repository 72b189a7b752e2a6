"""The analyst marts: what creator analytics report, as views in schema ``tiktok`` (migration 0010).

Plain views (always current):

- ``mart_account_daily_growth``: per account and snapshot day, followers and likes, their growth
  since the previous snapshot and per day (snapshots may skip days: ``days_since_previous``).
- ``mart_video_engagement``: per video, its latest counts and ``engagement_rate`` =
  (likes + comments + shares) / views (NULL with no views).
- ``mart_posting_cadence``: per account, posts, first/last post, ``posts_per_week`` = posts / the
  weeks between the first and last post (at least one week), ``median_gap_hours`` between
  consecutive posts. Removed videos count: they were posted.
- ``mart_videos_removed_weekly``: per account and ISO week (Monday, UTC), videos marked removed.

Materialized views (:data:`MATERIALIZED_VIEWS`, refreshed by ``tiktok.refresh_marts()`` -- a
SECURITY DEFINER function, since only the owner may REFRESH and the DAGs' role is not the owner;
``REFRESH ... CONCURRENTLY`` so readers are never blocked):

- ``mart_account_engagement``: per account, live videos, views, interactions, the account's
  ``engagement_rate`` (sum of interactions / sum of views) and the median video engagement rate.
- ``mart_top_videos_7d``: live videos ranked by views gained over the last 7 UTC days (latest daily
  snapshot minus the last one at least 7 days older; a video posted inside the window counts from
  0), per account (``account_rank``) and overall (``overall_rank``).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

#: Materialized views the marts refresh DAG refreshes (through :func:`refresh`), in order.
MATERIALIZED_VIEWS: tuple[str, ...] = ("mart_account_engagement", "mart_top_videos_7d")
#: Every mart, plain or materialized.
MARTS: tuple[str, ...] = (
    "mart_account_daily_growth",
    "mart_video_engagement",
    "mart_posting_cadence",
    "mart_videos_removed_weekly",
    *MATERIALIZED_VIEWS,
)

#: One example query per mart (the README shows them; a test runs each).
EXAMPLE_QUERIES: dict[str, str] = {
    "mart_account_daily_growth": (
        "SELECT snapshot_date, follower_count, follower_growth, follower_growth_per_day, likes_growth_per_day\n"
        "FROM tiktok.mart_account_daily_growth\n"
        "WHERE username = :username AND snapshot_date >= current_date - 30\n"
        "ORDER BY snapshot_date"
    ),
    "mart_video_engagement": (
        "SELECT video_id, title, view_count, engagement_rate\n"
        "FROM tiktok.mart_video_engagement\n"
        "WHERE username = :username AND removed_at IS NULL AND view_count >= 1000\n"
        "ORDER BY engagement_rate DESC NULLS LAST LIMIT 10"
    ),
    "mart_posting_cadence": (
        "SELECT open_id, posts, posts_per_week, median_gap_hours, last_post_at\n"
        "FROM tiktok.mart_posting_cadence ORDER BY posts_per_week DESC"
    ),
    "mart_videos_removed_weekly": (
        "SELECT week_start, sum(videos_removed) AS removed\n"
        "FROM tiktok.mart_videos_removed_weekly GROUP BY week_start ORDER BY week_start DESC LIMIT 12"
    ),
    "mart_account_engagement": (
        "SELECT username, videos, views, engagement_rate, median_video_engagement_rate, refreshed_at\n"
        "FROM tiktok.mart_account_engagement ORDER BY engagement_rate DESC NULLS LAST"
    ),
    "mart_top_videos_7d": (
        "SELECT open_id, account_rank, video_id, title, views_7d\n"
        "FROM tiktok.mart_top_videos_7d WHERE account_rank <= 5 ORDER BY open_id, account_rank"
    ),
}


def refresh(conn: Connection) -> None:
    """Refresh every materialized mart (``SELECT tiktok.refresh_marts()``), as the DAGs' role may."""
    conn.execute(text("SELECT tiktok.refresh_marts()"))
