"""Each mart against the real Postgres, on rows inserted here, with numbers computed by hand."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ProgrammingError

from tiktok_warehouse import marts
from tiktok_warehouse.tables import MATERIALIZED_VIEW_NAMES

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
DAY = timedelta(days=1)


def add_video(conn: Any, open_id: str, posted: datetime, *, removed_at: datetime | None = None, **counts: int) -> str:
    video_id = f"7{uuid.uuid4().int % 10**18:018d}"
    conn.execute(
        text(
            "INSERT INTO tiktok.videos (id, open_id, create_time, title, view_count, like_count, comment_count,"
            " share_count, first_seen_at, last_seen_at, removed_at)"
            " VALUES (:id, :o, :t, 'v', :views, :likes, :comments, :shares, :t, :t, :removed)"
        ),
        {
            "id": video_id,
            "o": open_id,
            "t": posted,
            "removed": removed_at,
            "views": counts.get("views"),
            "likes": counts.get("likes"),
            "comments": counts.get("comments"),
            "shares": counts.get("shares"),
        },
    )
    return video_id


def add_snapshot(conn: Any, video_id: str, day: date, views: int) -> None:
    conn.execute(
        text(
            "INSERT INTO tiktok.video_snapshots (video_id, snapshot_date, view_count, like_count, comment_count,"
            " share_count, captured_at) VALUES (:v, :d, :n, 0, 0, 0, :at)"
        ),
        {"v": video_id, "d": day, "n": views, "at": datetime(day.year, day.month, day.day, 12, tzinfo=UTC)},
    )


def rows(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql), params)]


def test_account_daily_growth(wh_engine: Engine, new_account: Callable[..., str]) -> None:
    open_id = new_account(username="grower")
    with wh_engine.begin() as conn:
        for day, followers, likes in ((0, 100, 1_000), (1, 120, 1_100), (3, 90, 1_100)):
            conn.execute(
                text(
                    "INSERT INTO tiktok.profile_snapshots (open_id, snapshot_date, follower_count, likes_count,"
                    " captured_at) VALUES (:o, :d, :f, :l, :at)"
                ),
                {"o": open_id, "d": (T0 + day * DAY).date(), "f": followers, "l": likes, "at": T0 + day * DAY},
            )
    assert rows(
        wh_engine,
        "SELECT username, follower_growth, days_since_previous, follower_growth_per_day, likes_growth_per_day"
        " FROM tiktok.mart_account_daily_growth WHERE open_id = :o ORDER BY snapshot_date",
        o=open_id,
    ) == [
        ("grower", None, None, None, None),
        ("grower", 20, 1, Decimal("20.00"), Decimal("100.00")),
        ("grower", -30, 2, Decimal("-15.00"), Decimal("0.00")),
    ]


def test_engagement_per_video_and_per_account(wh_engine: Engine, new_account: Callable[..., str]) -> None:
    open_id = new_account()
    with wh_engine.begin() as conn:
        a = add_video(conn, open_id, T0, views=1_000, likes=50, comments=10, shares=5)  # 65 / 1000
        c = add_video(conn, open_id, T0, views=3_000, likes=100, comments=20, shares=15)  # 135 / 3000
        b = add_video(conn, open_id, T0, views=0, likes=0, comments=0, shares=0)  # no views: no rate
        add_video(conn, open_id, T0, removed_at=T0 + DAY, views=10, likes=10, comments=0, shares=0)  # removed
    per_video = dict(
        rows(
            wh_engine,
            "SELECT video_id, engagement_rate FROM tiktok.mart_video_engagement WHERE open_id = :o",
            o=open_id,
        )
    )
    assert per_video[a] == Decimal("0.0650") and per_video[c] == Decimal("0.0450") and per_video[b] is None
    with wh_engine.begin() as conn:
        marts.refresh(conn)
    assert rows(
        wh_engine,
        "SELECT videos, views, interactions, engagement_rate, median_video_engagement_rate"
        " FROM tiktok.mart_account_engagement WHERE open_id = :o",
        o=open_id,
    ) == [(3, 4_000, 200, Decimal("0.0500"), Decimal("0.0550"))]


def test_posting_cadence(wh_engine: Engine, new_account: Callable[..., str]) -> None:
    open_id = new_account()
    with wh_engine.begin() as conn:
        for days in (0, 1, 3, 14):  # gaps of 24 h, 48 h, 264 h over two weeks
            add_video(conn, open_id, T0 + days * DAY, removed_at=T0 + 20 * DAY if days == 3 else None)
    assert rows(
        wh_engine,
        "SELECT posts, first_post_at, last_post_at, posts_per_week, median_gap_hours"
        " FROM tiktok.mart_posting_cadence WHERE open_id = :o",
        o=open_id,
    ) == [(4, T0, T0 + 14 * DAY, Decimal("2.00"), Decimal("48.00"))]


def test_videos_removed_per_week(wh_engine: Engine, new_account: Callable[..., str]) -> None:
    open_id = new_account()
    with wh_engine.begin() as conn:
        add_video(conn, open_id, T0 - 30 * DAY, removed_at=T0)  # Monday 2 March
        add_video(conn, open_id, T0 - 30 * DAY, removed_at=T0 + 2 * DAY + timedelta(hours=13))  # Wednesday
        add_video(conn, open_id, T0 - 30 * DAY, removed_at=T0 + 6 * DAY + timedelta(hours=13, minutes=59))  # Sun 23:59
        add_video(conn, open_id, T0 - 30 * DAY, removed_at=T0 + 7 * DAY)  # the next Monday
        add_video(conn, open_id, T0 - 30 * DAY)  # live
    assert rows(
        wh_engine,
        "SELECT week_start, videos_removed FROM tiktok.mart_videos_removed_weekly WHERE open_id = :o ORDER BY 1",
        o=open_id,
    ) == [(date(2026, 3, 2), 3), (date(2026, 3, 9), 1)]


def test_top_videos_by_7_day_views(wh_engine: Engine, new_account: Callable[..., str]) -> None:
    open_id = new_account()
    today = datetime.now(UTC).date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
    with wh_engine.begin() as conn:
        old = add_video(conn, open_id, midnight - 60 * DAY)
        for days_ago, views in ((8, 100), (7, 150), (0, 1_150)):
            add_snapshot(conn, old, today - timedelta(days=days_ago), views)  # 1150 - 150 = 1000
        new = add_video(conn, open_id, midnight - 2 * DAY)
        add_snapshot(conn, new, today - timedelta(days=1), 500)  # posted in the window: from 0
        stale = add_video(conn, open_id, midnight - 60 * DAY)
        add_snapshot(conn, stale, today - timedelta(days=10), 9_999)  # no snapshot in the window
        unknown = add_video(conn, open_id, midnight - 30 * DAY)
        add_snapshot(conn, unknown, today - timedelta(days=3), 200)  # no base 7 days back: not guessed
        add_snapshot(conn, unknown, today, 300)
        gone = add_video(conn, open_id, midnight - 2 * DAY, removed_at=midnight)
        add_snapshot(conn, gone, today, 10_000)  # removed: not a top video
        marts.refresh(conn)
    assert rows(
        wh_engine,
        "SELECT video_id, views_7d, account_rank FROM tiktok.mart_top_videos_7d WHERE open_id = :o ORDER BY 3",
        o=open_id,
    ) == [(old, 1_000, 1), (new, 500, 2)]


def test_a_role_that_does_not_own_the_marts_refreshes_them(wh_engine: Engine) -> None:
    role = f"marts_test_{uuid.uuid4().hex[:8]}"
    with wh_engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} NOLOGIN"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA tiktok TO {role}"))
        # as tiktok_ops.dag_role grants it to the DAGs' role (not PUBLIC: migration 0011)
        conn.execute(text(f"GRANT EXECUTE ON FUNCTION tiktok.refresh_marts() TO {role}"))
    try:
        with wh_engine.begin() as conn:
            conn.execute(text(f"SET LOCAL ROLE {role}"))
            marts.refresh(conn)
        with wh_engine.begin() as conn, pytest.raises(ProgrammingError, match="must be owner"):
            conn.execute(text(f"SET LOCAL ROLE {role}"))
            conn.execute(text(f"REFRESH MATERIALIZED VIEW tiktok.{MATERIALIZED_VIEW_NAMES[0]}"))
    finally:
        with wh_engine.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))


def test_every_example_query_runs(wh_engine: Engine) -> None:
    assert set(marts.EXAMPLE_QUERIES) == set(marts.MARTS)
    assert marts.MATERIALIZED_VIEWS == MATERIALIZED_VIEW_NAMES
    with wh_engine.connect() as conn:
        for sql in marts.EXAMPLE_QUERIES.values():
            conn.execute(text(sql), {"username": "nobody"}).all()


def test_engagement_survives_counts_at_the_int64_limit(wh_engine: Engine, new_account: Callable[..., str]) -> None:
    """Three int64 counts add up past bigint: the marts sum them as numeric (a refresh failed before)."""
    open_id = new_account()
    big = 2**63 - 1
    with wh_engine.begin() as conn:
        video = add_video(conn, open_id, T0, views=big, likes=big, comments=big, shares=1)
    [(interactions, rate)] = rows(
        wh_engine,
        "SELECT interactions, engagement_rate FROM tiktok.mart_video_engagement WHERE video_id = :v",
        v=video,
    )
    assert interactions == 2 * big + 1 and rate == Decimal("2.0000")
    with wh_engine.begin() as conn:
        marts.refresh(conn)
    assert rows(wh_engine, "SELECT interactions FROM tiktok.mart_account_engagement WHERE open_id = :o", o=open_id) == [
        (2 * big + 1,)
    ]
