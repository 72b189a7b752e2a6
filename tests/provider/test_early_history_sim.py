"""Early history end to end: the simulator's clock moves hour by hour, video/query (through the
hook, as the cover refresh calls it) captures every hour, and the 1 h / 6 h / 24 h marks of
``video_early_metrics`` match the simulator's ground truth within one capture interval."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from tiktok_sim.testing import running_simulator
from tiktok_warehouse.history import record_captures

pytestmark = pytest.mark.integration

HOUR = 3600
INTERVAL = HOUR  # one capture an hour
MARKS = {"1h": 1 * HOUR, "6h": 6 * HOUR, "24h": 24 * HOUR}


def test_hourly_captures_match_the_simulators_ground_truth(
    test_databases: Any, warehouse_engine: Any, encryption_key: str
) -> None:
    from tiktok_pipeline.hooks import display_hook
    from tiktok_tools.simaccounts import connect_sim_account, simulator_connections

    # A frozen clock of its own (the session's simulator must not jump a day), and access tokens
    # that outlive the day the test moves through.
    with running_simulator(
        seed=16, accounts=0, rate_limit=100_000, rate_window=60, freeze_clock=True, access_ttl=10 * 86400
    ) as sim:
        env = simulator_connections(
            sim,
            encryption_key=encryption_key,
            warehouse_uri=test_databases.database_url(test_databases.warehouse_db, driver="postgresql"),
            rate_limit_per_minute=100_000,
            max_backoff_seconds=0.2,
        )
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            hook = display_hook(sleep=lambda _s: None)
            open_id = connect_sim_account(sim.admin, hook, videos=0)
            # Three videos posted at different minutes, so captures fall off the marks.
            start = sim.admin.now()
            ids = [
                sim.admin.add_videos(open_id, 1, create_time=int(start) - offset)[0] for offset in (0, 17 * 60, 41 * 60)
            ]
            sim.admin.reset_stats()
            captured = 0
            now = start
            for _hour in range(27):  # a capture at posting time, then one an hour for 26 hours
                at = datetime.fromtimestamp(now, UTC)
                for _batch, videos in hook.query_videos(open_id, ids):
                    with warehouse_engine.begin() as conn:
                        captured += record_captures(conn, open_id, videos, at, "query")
                now = sim.admin.advance_clock(INTERVAL)
            queries = sim.admin.stats()["endpoints"]["video_query"]["requests"]
            assert queries == 27  # the calls made: one per hour, nothing extra for the history
            assert captured == 27 * 3

            with warehouse_engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT video_id, mark, create_time, captured_at, view_count, like_count, comment_count,"
                        " share_count FROM tiktok.video_early_metrics WHERE open_id = :o"
                    ),
                    {"o": open_id},
                ).all()
            got = {(row.video_id, row.mark): row for row in rows}
            for video_id in ids:
                for mark, age in MARKS.items():
                    row = got[(video_id, mark)]
                    posted = row.create_time.timestamp()
                    actual = row.captured_at.timestamp() - posted
                    assert abs(actual - age) <= INTERVAL / 2  # the nearest hourly capture
                    truth = sim.admin.video(video_id)["video"]  # now: an upper bound
                    at_capture = ground_truth(sim, open_id, video_id, row.captured_at.timestamp())
                    assert (row.view_count, row.like_count, row.comment_count, row.share_count) == at_capture
                    # Within one capture interval of the mark, the truth brackets the stored value.
                    low = ground_truth(sim, open_id, video_id, posted + age - INTERVAL)
                    high = ground_truth(sim, open_id, video_id, posted + age + INTERVAL)
                    assert low[0] <= row.view_count <= high[0] <= truth["view_count"]


def ground_truth(sim: Any, open_id: str, video_id: str, at: float) -> tuple[int, int, int, int]:
    [video] = [v for v in sim.admin.videos(open_id, at=at) if v["id"] == video_id]
    return video["view_count"], video["like_count"], video["comment_count"], video["share_count"]
