"""What a video-list run does for one account, without a database: its window and where it stops."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from canned_tiktok import OPEN_ID, ok, page
from fake_warehouse import FakeWarehouse

from tiktok_pipeline.sync import prefetched, requested_window, sync_videos

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


def test_prefetch_fetches_the_next_page_while_the_caller_works_one_ahead_at_most() -> None:
    produced: list[tuple[int, str]] = []

    def pages() -> Any:
        for n in range(5):
            time.sleep(0.05)  # the HTTP request
            produced.append((n, threading.current_thread().name))
            yield n

    started = time.monotonic()
    seen = []
    for n in prefetched(pages()):
        assert len(produced) <= n + 2  # never more than one page ahead of the caller
        time.sleep(0.05)  # the page's write
        seen.append(n)
    assert seen == [0, 1, 2, 3, 4]
    assert all(name.startswith("tiktok-prefetch") for _, name in produced)
    assert time.monotonic() - started < 0.45  # overlapped: 5 x (fetch + write) one after the other is 0.5 s


def test_prefetch_raises_a_fetch_error_in_the_caller_after_the_pages_before_it() -> None:
    def pages() -> Any:
        yield 1
        yield 2
        raise RuntimeError("429 for ever")

    seen = []
    with pytest.raises(RuntimeError, match="429"):
        for n in prefetched(pages()):
            seen.append(n)
    assert seen == [1, 2]


def test_prefetch_asks_for_nothing_after_a_page_past_the_window_and_closes_on_break() -> None:
    asked: list[int] = []
    closed: list[bool] = []

    def pages() -> Any:
        try:
            for n in range(10):
                asked.append(n)
                yield n
        finally:
            closed.append(True)

    assert list(prefetched(pages(), fetch_next=lambda n: n < 3)) == [0, 1, 2, 3]
    assert asked == [0, 1, 2, 3] and closed == [True]
    asked.clear()
    closed.clear()
    for n in prefetched(pages()):
        if n == 1:
            break
    assert asked == [0, 1, 2] and closed == [True]  # one page ahead, then the source is closed
