"""What a video-list run does for one account, without a database: its window and where it stops."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from canned_tiktok import OPEN_ID, ok, page
from fake_warehouse import FakeWarehouse

from tiktok_pipeline.sync import requested_window, sync_videos

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_an_incremental_run_looks_back_lookback_days_and_a_full_run_at_everything() -> None:
    assert requested_window("incremental", 7, NOW) == NOW - timedelta(days=7)
    assert requested_window("full", 7, NOW) is None


def test_an_incremental_listing_stops_past_its_window(make_hook: Any) -> None:
    window_ms = int((NOW - timedelta(days=7)).timestamp() * 1000)
    hook, script, _, _ = make_hook(
        page(["3"], cursor=window_ms + 1, has_more=True),
        page(["2"], cursor=window_ms - 1, has_more=True),  # past the window: the walk stops here
        ok({"videos": []}),
    )
    wh = FakeWarehouse()
    summary = sync_videos(
        hook, wh, OPEN_ID, mode="incremental", lookback_days=7, context={}, now=NOW, log=logging.getLogger("t")
    )
    assert wh.pages == [["3"], ["2"]]
    assert summary["pages"] == 2
    assert script.paths() == ["/v2/video/list/", "/v2/video/list/"]
