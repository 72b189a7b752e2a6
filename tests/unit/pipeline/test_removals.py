"""Where removals are decided, without a database: the earlier-run test and the cover refresh's verdicts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from fake_warehouse import FakeWarehouse

from tiktok_pipeline.removals import listed_in_an_earlier_run, refresh_covers
from tiktok_warehouse.loads import SyncState

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SYNC = SyncState(
    sync_id=1,
    open_id="a",
    mode="full",
    cursor=None,
    window_start=None,
    started_at=NOW.isoformat(),
    pages=3,
    videos_seen=60,
    resumed=True,
)


def listed(at: datetime) -> SyncState:
    return replace(SYNC, listed_at=at.isoformat())


def test_a_listing_that_ended_before_this_run_started_is_from_an_earlier_run() -> None:
    run = {"dag_run": SimpleNamespace(start_date=NOW - timedelta(minutes=5))}
    assert listed_in_an_earlier_run(listed(NOW - timedelta(minutes=6)), run, NOW)
    assert not listed_in_an_earlier_run(listed(NOW - timedelta(minutes=4)), run, NOW), "an earlier try of this run"


def test_without_a_run_start_an_hour_old_listing_counts_as_earlier() -> None:
    assert listed_in_an_earlier_run(listed(NOW - timedelta(hours=1)), {}, NOW)
    assert not listed_in_an_earlier_run(listed(NOW - timedelta(minutes=59)), {}, NOW)


class AnsweringHook:
    """Answers video/query with every requested id but the ``gone`` ones, 20 a call."""

    def __init__(self, gone: set[str]) -> None:
        self.gone = gone
        self.asked: list[list[str]] = []

    def query_videos(self, open_id: str, ids: Any, *, fields: Any) -> Any:
        ids = list(ids)
        for start in range(0, len(ids), 20):
            batch = ids[start : start + 20]
            self.asked.append(batch)
            yield batch, [{"id": i} for i in batch if i not in self.gone]


def test_the_cover_refresh_rechecks_recent_removals_and_judges_only_at_the_end() -> None:
    wh = FakeWarehouse(stale=["2", "1"], recheck=["5"], confirmed=["5"])
    hook = AnsweringHook(gone={"5"})
    done = refresh_covers(hook, wh, "a", video_ids=None, horizon=timedelta(hours=1), now=NOW)  # type: ignore[arg-type]
    assert hook.asked == [["1", "2", "5"]]
    assert [name for name, _ in wh.calls] == ["apply_video_query", "mark_removals"]
    assert (done.requested, done.missing, done.removed, done.rechecked) == (3, 1, 1, ["5"])


def test_given_ids_are_asked_as_they_are_without_rechecks() -> None:
    wh = FakeWarehouse(stale=["2"], recheck=["5"])
    hook = AnsweringHook(gone=set())
    done = refresh_covers(hook, wh, "a", video_ids=["9"], horizon=timedelta(hours=1), now=NOW)  # type: ignore[arg-type]
    assert hook.asked == [["9"]] and done.rechecked == [] and done.removed == 0


def test_the_share_guard_holds_more_than_a_fifth_and_more_than_five() -> None:
    from tiktok_pipeline.removals import POLICY

    assert not POLICY.holds(5, 10), "five are never too many"
    assert POLICY.holds(6, 10)
    assert not POLICY.holds(6, 30), "6 of 30 is 20%: not more"
    assert POLICY.holds(7, 30)
    assert POLICY.hold_rule() == "20%"
