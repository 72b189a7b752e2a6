"""Early history against the real Postgres: record_captures keeps young videos once, the views pick
the capture nearest each mark (within its tolerance) and the per-account medians."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from tiktok_warehouse.history import record_captures

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


def video(video_id: str, posted: datetime, views: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": video_id,
        "create_time": int(posted.timestamp()),
        "view_count": views,
        "like_count": views // 10,
        "comment_count": views // 100,
        "share_count": views // 1000,
        **extra,
    }


def captures(engine: Engine, open_id: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                text(
                    "SELECT video_id, captured_at, view_count, source FROM tiktok.video_captures"
                    " WHERE open_id = :o ORDER BY video_id, captured_at"
                ),
                {"o": open_id},
            )
        ]


def early(engine: Engine, video_id: str) -> dict[str, tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT mark, age_hours, view_count, like_count, source FROM tiktok.video_early_metrics"
                " WHERE video_id = :v"
            ),
            {"v": video_id},
        )
        return {row.mark: (float(row.age_hours), row.view_count, row.like_count, row.source) for row in rows}


def test_only_young_videos_are_kept_once(wh_engine: Engine, new_account: Callable[..., str]) -> None:
    open_id = new_account()
    rows = [
        video("7100000000000000001", T0 - 2 * HOUR, 500),
        video("7100000000000000002", T0 - timedelta(days=13, hours=23), 9_000),
        video("7100000000000000003", T0 - timedelta(days=14, hours=1), 20_000),  # too old
        video("7100000000000000004", T0 + HOUR, 1),  # scheduled: posted after the capture
        {"id": "7100000000000000005", "view_count": 3},  # no create_time
        video("7100000000000000006", T0 - HOUR, 7, view_count="many"),  # garbled count: kept as NULL
    ]
    with wh_engine.begin() as conn:
        assert record_captures(conn, open_id, rows, T0, "list", 14) == 3
    with wh_engine.begin() as conn:  # a retried task: nothing twice
        assert record_captures(conn, open_id, rows, T0, "list", 14) == 0
    with wh_engine.begin() as conn:
        assert record_captures(conn, open_id, rows[:1], T0 + HOUR, "query", 14) == 1
        assert record_captures(conn, open_id, [], T0, "query") == 0
        assert record_captures(conn, open_id, rows, T0 + 2 * HOUR, "query", 0) == 0
    assert captures(wh_engine, open_id) == [
        ("7100000000000000001", T0, 500, "list"),
        ("7100000000000000001", T0 + HOUR, 500, "query"),
        ("7100000000000000002", T0, 9_000, "list"),
        ("7100000000000000006", T0, None, "list"),
    ]


def test_a_page_of_older_videos_costs_no_statement(wh_engine: Engine, new_account: Callable[..., str]) -> None:
    open_id = new_account()
    old = [video(f"73000000000000000{i:02d}", T0 - timedelta(days=16 + i), 100) for i in range(20)]
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(wh_engine, "before_cursor_execute", count)
    try:
        with wh_engine.begin() as conn:
            assert record_captures(conn, open_id, old, T0, "list", 14) == 0
            assert not [s for s in statements if "video_captures" in s]
            # One young video among them: the statement runs, and keeps only that one.
            young = video("7300000000000000099", T0 - HOUR, 5)
            assert record_captures(conn, open_id, [*old, young], T0, "list", 14) == 1
            assert len([s for s in statements if "video_captures" in s]) == 1
    finally:
        event.remove(wh_engine, "before_cursor_execute", count)
    assert captures(wh_engine, open_id) == [("7300000000000000099", T0, 5, "list")]


def test_bad_arguments_are_refused(wh_engine: Engine, new_account: Callable[..., str]) -> None:
    open_id = new_account()
    with wh_engine.begin() as conn:
        with pytest.raises(ValueError, match="source"):
            record_captures(conn, open_id, [], T0, "cover")
        with pytest.raises(ValueError, match="timezone"):
            record_captures(conn, open_id, [], T0.replace(tzinfo=None), "list")


def test_marks_take_the_nearest_capture_within_tolerance(wh_engine: Engine, new_account: Callable[..., str]) -> None:
    open_id = new_account()
    posted = T0
    vid = "7200000000000000001"
    # Captures at 0.5 h, 1.25 h, 4 h, 23 h, 30 h after posting (views = minutes since posting).
    with wh_engine.begin() as conn:
        for minutes in (30, 75, 240, 23 * 60, 30 * 60):
            at = posted + timedelta(minutes=minutes)
            record_captures(conn, open_id, [video(vid, posted, minutes)], at, "query")
    got = early(wh_engine, vid)
    # 1h: 1.25 h (15 min off) beats 0.5 h (30 min off). 6h: 4 h is within +-3 h. 24h: 23 h.
    assert got["1h"] == (1.25, 75, 7, "query")
    assert got["6h"] == (4.0, 240, 24, "query")
    assert got["24h"] == (23.0, 23 * 60, 138, "query")
    assert "7d" not in got and "28d" not in got  # nothing within a day of 7 days: no row, not a far-off value


def test_late_marks_come_from_daily_snapshots_and_medians_per_account(
    wh_engine: Engine, new_account: Callable[..., str], make_video: Callable[..., dict[str, Any]]
) -> None:
    open_id = new_account()
    # make_video(i) is posted i days before T0; load it, then daily snapshots 7 and 28 days after posting.
    v = make_video(30, view_count=100)
    posted = datetime.fromtimestamp(v["create_time"], UTC)
    with wh_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tiktok.videos (id, open_id, create_time, first_seen_at, last_seen_at)"
                " VALUES (:id, :o, :t, :t, :t)"
            ),
            {"id": v["id"], "o": open_id, "t": posted},
        )
        for days, views in ((7, 7_000), (27, 27_000), (28, 28_500)):
            at = posted + timedelta(days=days, hours=2)
            conn.execute(
                text(
                    "INSERT INTO tiktok.video_snapshots (video_id, snapshot_date, view_count, like_count,"
                    " comment_count, share_count, captured_at) VALUES (:v, :d, :n, 1, 1, 1, :at)"
                ),
                {"v": v["id"], "d": at.date(), "n": views, "at": at},
            )
        # A second, young video of the account with captures only.
        record_captures(conn, open_id, [video("7300000000000000001", T0, 10)], T0 + HOUR, "list")
        record_captures(conn, open_id, [video(v["id"], posted, 150)], posted + HOUR, "list", 10_000)
    got = early(wh_engine, v["id"])
    assert got["7d"] == (170.0, 7_000, 1, "daily")
    assert got["28d"] == (674.0, 28_500, 1, "daily")
    assert got["1h"] == (1.0, 150, 15, "list")
    with wh_engine.connect() as conn:
        medians = {
            row.mark: (row.videos, row.median_views)
            for row in conn.execute(
                text("SELECT mark, videos, median_views FROM tiktok.account_early_medians WHERE open_id = :o"),
                {"o": open_id},
            )
        }
    assert medians == {"1h": (2, 80.0), "7d": (1, 7_000.0), "28d": (1, 28_500.0)}
