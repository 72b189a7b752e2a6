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

from tiktok_pipeline.sync import MAX_UNCOMMITTED_PAGES, prefetched_batches, requested_window, sync_videos

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


def test_prefetch_fetches_ahead_while_the_caller_works_and_batches_what_arrived() -> None:
    produced: list[tuple[int, str]] = []

    def pages() -> Any:
        for n in range(12):
            time.sleep(0.01)  # the HTTP request
            produced.append((n, threading.current_thread().name))
            yield n

    started = time.monotonic()
    seen: list[int] = []
    batches: list[list[int]] = []
    for batch in prefetched_batches(pages(), ahead=4):
        # Never more than `ahead` items asked for beyond those the caller has finished with.
        assert len(produced) <= len(seen) + 4
        time.sleep(0.03)  # the batch's write: slower than a fetch
        seen += batch
        batches.append(batch)
    assert seen == list(range(12))
    assert all(name.startswith("tiktok-prefetch") for _, name in produced)
    assert max(map(len, batches)) > 1, "the pages that arrived during a write go in one batch"
    assert max(map(len, batches)) <= 4
    assert time.monotonic() - started < 12 * 0.04  # overlapped, and fewer writes than pages


def test_prefetch_hands_over_each_page_at_once_while_the_writes_keep_up() -> None:
    def pages() -> Any:
        for n in range(5):
            time.sleep(0.03)
            yield n

    assert list(prefetched_batches(pages(), ahead=4)) == [[0], [1], [2], [3], [4]]


def test_prefetch_bounds_what_is_fetched_and_not_done_with() -> None:
    asked: list[int] = []

    def pages() -> Any:
        for n in range(20):
            asked.append(n)
            yield n

    batches = prefetched_batches(pages(), ahead=3)
    first = next(batches)
    time.sleep(0.2)  # the caller is slow to come back: the fetch stops at `ahead` outstanding
    assert len(asked) == 3
    assert first and len(first) <= 3
    rest = [n for batch in batches for n in batch]
    assert first + rest == list(range(20))


def test_prefetch_raises_a_fetch_error_in_the_caller_after_the_pages_before_it() -> None:
    def pages() -> Any:
        yield 1
        yield 2
        raise RuntimeError("429 for ever")

    seen = []
    with pytest.raises(RuntimeError, match="429"):
        for batch in prefetched_batches(pages()):
            time.sleep(0.05)  # both pages (and the error) arrive while the first is written
            seen += batch
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

    assert [n for batch in prefetched_batches(pages(), fetch_next=lambda n: n < 3) for n in batch] == [0, 1, 2, 3]
    assert asked == [0, 1, 2, 3] and closed == [True]
    asked.clear()
    closed.clear()
    batches = prefetched_batches(pages(), ahead=2)
    next(batches)
    time.sleep(0.05)
    batches.close()  # the caller breaks off
    assert asked == [0, 1] and closed == [True]  # `ahead` at most, then the source is closed


def test_a_listing_commits_its_pages_with_the_crash_bound_of_uncommitted_pages(make_hook: Any) -> None:
    hook, script, _, _ = make_hook(
        *(page([str(100 - n)], cursor=1_000 - n, has_more=n < 9) for n in range(10)),
    )
    wh = FakeWarehouse(write_seconds=0.02, requested=lambda: len(script.requests))
    summary = sync_videos(
        hook, wh, OPEN_ID, mode="full", lookback_days=7, context={}, now=NOW, log=logging.getLogger("t")
    )
    assert summary["pages"] == 10 and summary["pages_total"] == 10
    assert [ids for batch in wh.batches for ids in batch] == [[str(100 - n)] for n in range(10)]
    assert max(map(len, wh.batches)) <= MAX_UNCOMMITTED_PAGES
    assert len(wh.batches) < 10, "pages fetched while one was written are committed together"
    assert wh.max_uncommitted <= MAX_UNCOMMITTED_PAGES


def test_a_failed_write_stops_the_fetch_at_once(make_hook: Any) -> None:
    hook, script, _, _ = make_hook(
        *(page([str(100 - n)], cursor=1_000 - n, has_more=True) for n in range(30)),
    )

    class Broken(FakeWarehouse):
        def load_video_pages(self, *args: Any, **kwargs: Any) -> Any:
            time.sleep(0.05)  # the fetch runs ahead meanwhile
            raise RuntimeError("the warehouse went away")

    with pytest.raises(RuntimeError, match="went away") as failed:
        sync_videos(
            hook, Broken(), OPEN_ID, mode="full", lookback_days=7, context={}, now=NOW, log=logging.getLogger("t")
        )
    # Even while the error (and with it the sync's frame) is still referenced: no fetch goes on.
    assert not [t for t in threading.enumerate() if t.name.startswith("tiktok-prefetch")]
    assert len(script.requests) <= MAX_UNCOMMITTED_PAGES
    assert failed.traceback  # still held here
