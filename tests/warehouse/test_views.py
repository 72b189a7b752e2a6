"""The analyst views: daily growth deltas per account, and the latest stats of each video."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tiktok_warehouse.loads import Warehouse

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
DAY = timedelta(days=1)


def growth(engine: Engine, open_id: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                text(
                    "SELECT snapshot_date, follower_count, follower_count_delta, likes_count, likes_count_delta,"
                    " video_count_delta, days_since_previous FROM tiktok.account_daily_growth"
                    " WHERE open_id = :o ORDER BY snapshot_date"
                ),
                {"o": open_id},
            )
        ]


def test_account_daily_growth_deltas(warehouse: Warehouse, wh_engine: Engine, new_account: Callable[..., str]):
    creator, other = new_account(), new_account()
    days = [
        (T0, {"follower_count": 100, "likes_count": 1_000, "video_count": 5}),
        (T0 + DAY, {"follower_count": 120, "likes_count": 1_100, "video_count": 6}),
        (T0 + 3 * DAY, {"follower_count": 90, "likes_count": 1_100, "video_count": 6}),  # a gap, then a loss
    ]
    for captured_at, user in days:
        warehouse.upsert_profile_snapshot(creator, user, captured_at=captured_at)
    warehouse.upsert_profile_snapshot(other, {"follower_count": 5, "likes_count": 1}, captured_at=T0 + DAY)

    assert growth(wh_engine, creator) == [
        (T0.date(), 100, None, 1_000, None, None, None),
        ((T0 + DAY).date(), 120, 20, 1_100, 100, 1, 1),
        ((T0 + 3 * DAY).date(), 90, -30, 1_100, 0, 0, 2),
    ]
    # Each account is its own series: the other account's first day has no previous day.
    assert growth(wh_engine, other) == [((T0 + DAY).date(), 5, None, 1, None, None, None)]


def test_video_latest_stats(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Callable[..., dict[str, Any]]
) -> None:
    far = int((datetime.now(UTC) + timedelta(days=365)).timestamp())
    fresh = make_video(1, cover_image_url=f"https://p16.tiktokcdn.com/a.jpeg?x-expires={far}", like_count=10)
    stale = make_video(2, cover_image_url="https://p16.tiktokcdn.com/b.jpeg?x-expires=1700000000")
    warehouse.upsert_videos(account, [fresh, stale], captured_at=T0)
    warehouse.upsert_videos(account, [dict(fresh, like_count=15, view_count=99)], captured_at=T0 + DAY)
    uncounted = {key: value for key, value in make_video(3).items() if not key.endswith("_count")}
    warehouse.upsert_videos(account, [uncounted], captured_at=T0 + DAY)

    with wh_engine.connect() as conn:
        found = {
            row.video_id: row
            for row in conn.execute(text("SELECT * FROM tiktok.video_latest_stats WHERE open_id = :o"), {"o": account})
        }
    latest = found[fresh["id"]]
    assert (latest.like_count, latest.view_count, latest.stats_date) == (15, 99, (T0 + DAY).date())
    assert (latest.username, latest.display_name, latest.title) == ("creator", "Creator", fresh["title"])
    assert latest.cover_is_fresh is True
    assert latest.cover_expires_at == datetime.fromtimestamp(far, UTC)
    assert latest.stats_captured_at == T0 + DAY
    assert (found[stale["id"]].cover_is_fresh, found[stale["id"]].stats_date) == (False, T0.date())
    assert (found[uncounted["id"]].like_count, found[uncounted["id"]].stats_date) == (None, None)
