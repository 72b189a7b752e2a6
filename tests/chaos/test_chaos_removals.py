"""Live videos are never marked removed by a routine sync: the audit's issue 11, items 4 to 7, end to end.

Every case runs the DAGs through ``dag.test()`` against the simulator over real HTTP and the real
Postgres, breaks something the way the audit found it broken, and checks that no live video got
``removed_at``, while a truly deleted one still does.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from chaos_support import rows, states, tries, warehouse_contents, xcom
from sqlalchemy import text

pytestmark = pytest.mark.integration

LOG_ID = re.compile(r"log_id=\d{14}[0-9A-F]{20}")


def removed(engine: Any, open_id: str) -> set[str]:
    """The account's videos marked removed."""
    found = rows(engine, "SELECT id FROM tiktok.videos WHERE open_id = :o AND removed_at IS NOT NULL", o=open_id)
    return {r[0] for r in found}


def stored_ids(engine: Any, open_id: str) -> set[str]:
    return {r[0] for r in rows(engine, "SELECT id FROM tiktok.videos WHERE open_id = :o", o=open_id)}


def failure_text(capfd: Any, open_id: str) -> str:
    """The error the failed task logged for the account (the line an on-call engineer reads)."""
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if f"call for account {open_id} failed" in line]
    assert lines, "the task's error must name the account"
    return lines[-1]


def an_hour_passes(engine: Any, open_id: str) -> None:
    """Move the account's stored first misses two hours back: the next run is a later look."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE tiktok.videos SET missing_since = missing_since - interval '2 hours'"
                " WHERE open_id = :o AND missing_since IS NOT NULL"
            ),
            {"o": open_id},
        )


def calls(sim: Any, endpoint: str) -> int:
    return sim.admin.stats()["endpoints"].get(endpoint, {}).get("requests", 0)


# -- item 6: {"data": {}} is a contract break, not "no videos" ---------------------------------------


def test_empty_data_on_a_list_page_fails_the_task_and_marks_nothing_removed(
    sim, run_dag, connect, frozen_clock, clean_warehouse, capfd
) -> None:
    open_id = connect(videos=60)
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    before = warehouse_contents(clean_warehouse)
    assert len(before["videos"]) == 60

    sim.admin.set_faults("video_list", queue=[("pass", 1), ("empty_data", 1)])
    run = run_dag("tiktok_video_backfill", mode="full")
    assert states(run)[("sync_videos", 0)] == "failed"
    assert tries(run)[("sync_videos", 0)] == 1, "a contract break is not retried"
    message = failure_text(capfd, open_id)
    assert "data.videos is missing" in message
    assert "/v2/video/list/" in message
    assert LOG_ID.search(message), message
    assert "support" in message, "the error says what to do next"
    assert removed(clean_warehouse, open_id) == set()
    assert warehouse_contents(clean_warehouse) == before, "stored data untouched"

    # Clearing the task resumes and completes; nothing was lost, nothing is marked removed.
    run = run_dag("tiktok_video_backfill", mode="full")
    assert str(run.state) == "success", states(run)
    assert removed(clean_warehouse, open_id) == set()
    assert warehouse_contents(clean_warehouse) == before


def test_empty_data_on_a_cover_query_fails_the_task_and_marks_nothing_removed(
    sim, run_dag, connect, frozen_clock, clean_warehouse, capfd
) -> None:
    open_id = connect(videos=30)
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    before = warehouse_contents(clean_warehouse)

    sim.admin.set_faults("video_query", queue=[("empty_data", 1)])
    run = run_dag("tiktok_cover_refresh", horizon_minutes=7 * 60)  # every cover: they all expire within 7 h
    assert states(run)[("refresh_covers", 0)] == "failed"
    assert tries(run)[("refresh_covers", 0)] == 1
    message = failure_text(capfd, open_id)
    assert "data.videos is missing" in message
    assert "/v2/video/query/" in message
    assert LOG_ID.search(message), message
    assert removed(clean_warehouse, open_id) == set()
    assert warehouse_contents(clean_warehouse) == before, "stored data untouched"


# -- item 4: a resumed incremental stops where its stored window ends --------------------------------


def post_videos(sim: Any, open_id: str, now: float, days_ago: list[float]) -> list[str]:
    """Post one video at each age (in days before ``now``); return their ids."""
    return [sim.admin.add_videos(open_id, 1, create_time=int(now - d * 86400))[0] for d in days_ago]


def test_a_resumed_incremental_judges_and_walks_the_same_stored_window(
    sim, run_dag, connect, tiktok_extra, frozen_clock, clean_warehouse
) -> None:
    open_id = connect(videos=10)  # the population's videos are all months old
    recent = post_videos(sim, open_id, frozen_clock, [1 + i * 0.2 for i in range(20)])  # 1..4.8 days old
    # Inside a 7-day window, outside a 6-day one: the videos the audit saw marked removed.
    edge = post_videos(sim, open_id, frozen_clock, [6.1 + i * 0.02 for i in range(45)])  # 6.1..6.98 days old
    older = post_videos(sim, open_id, frozen_clock, [8, 9, 10])
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    assert len(stored_ids(clean_warehouse, open_id)) == 10 + 20 + 45 + 3

    # The daily incremental (7 days) commits its first page, then video/list fails past every retry.
    tiktok_extra(max_attempts=2)
    sim.admin.set_faults("video_list", queue=[("pass", 1), ("internal_error", 100)])
    failed = run_dag("tiktok_video_backfill", mode="incremental", lookback_days=7)
    assert states(failed)[("sync_videos", 0)] == "failed"
    assert tries(failed)[("sync_videos", 0)] == 4, "every Airflow try resumed and failed"
    [(pages, window_days)] = rows(
        clean_warehouse,
        "SELECT pages, extract(epoch FROM now() - window_start) / 86400 FROM tiktok.sync_state"
        " WHERE open_id = :o AND mode = 'incremental' AND finished_at IS NULL",
        o=open_id,
    )
    assert pages == 1 and 6.99 < window_days < 7.01
    sim.admin.clear_faults()

    # The next "day": lookback_days is now 6 (what a day's advance does to the window this run would
    # compute). The resumed sync keeps its stored 7-day window for both its stop point and its removals.
    gone = edge[-1]
    sim.admin.delete_video(gone)  # one video inside the stored window really is deleted
    resumed = run_dag("tiktok_video_backfill", mode="incremental", lookback_days=6)
    assert str(resumed.state) == "success", states(resumed)
    [summary] = xcom(resumed, "sync_videos")
    assert summary["resumed"] is True
    assert (summary["removal_suspects"], summary["removals_pending"], summary["removed"]) == (1, 1, 0)
    an_hour_passes(clean_warehouse, open_id)
    run = run_dag("tiktok_video_backfill", mode="incremental", lookback_days=7)
    [summary] = xcom(run, "sync_videos")
    assert removed(clean_warehouse, open_id) == {gone}, "no live video is marked removed; the deleted one is"
    assert summary["removed"] == 1
    assert not removed(clean_warehouse, open_id) & set(recent + edge[:-1] + older)


# -- item 5: a retry remembers the videos an earlier try could not identify ---------------------------


def test_a_retry_remembers_that_an_earlier_try_met_unidentifiable_videos(
    sim, run_dag, connect, tiktok_extra, frozen_clock, clean_warehouse
) -> None:
    open_id = connect(videos=60)
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    assert len(stored_ids(clean_warehouse, open_id)) == 60

    # Try 1: the first page's 20 ids come back garbled, then video/list fails past the hook's
    # patience. Try 2 resumes after that page and meets only well-formed videos.
    tiktok_extra(max_attempts=2)
    sim.admin.set_faults("video_list", queue=[("non_numeric_id", 1), ("internal_error", 2)])
    sim.admin.reset_stats()
    run = run_dag("tiktok_video_backfill", mode="full")
    assert str(run.state) == "success", states(run)
    assert tries(run)[("sync_videos", 0)] == 2, "the second Airflow try finished the sync"
    [summary] = xcom(run, "sync_videos")
    assert summary["resumed"] is True
    assert removed(clean_warehouse, open_id) == set(), "no live video is marked removed"
    assert summary["removed"] == 0
    assert summary["unidentified"] == 20, "the retry knows what the first try met"


# -- item 7: one listing or one query answer never marks a video removed ------------------------------


def test_a_listing_that_ends_early_marks_only_what_video_query_confirms_gone(
    sim, run_dag, connect, frozen_clock, clean_warehouse
) -> None:
    open_id = connect(videos=100)
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    ids = sim.admin.video_ids(open_id)  # newest first
    deleted, hidden = ids[70], ids[90]
    sim.admin.delete_video(deleted)
    sim.admin.privatise_video(hidden)

    # A normal day: two suspects, left out by video/query: pending. The next run, an hour or more
    # later, finds them missing again and marks them.
    sim.admin.reset_stats()
    run = run_dag("tiktok_video_backfill", mode="full")
    assert str(run.state) == "success", states(run)
    [summary] = xcom(run, "sync_videos")
    assert (summary["removal_suspects"], summary["removals_pending"], summary["removed"]) == (2, 2, 0)
    assert calls(sim, "video_query") == 1, "ceil(2 / 20) calls to ask about two suspects"
    assert removed(clean_warehouse, open_id) == set()
    an_hour_passes(clean_warehouse, open_id)
    sim.admin.reset_stats()
    run = run_dag("tiktok_video_backfill", mode="full")
    [summary] = xcom(run, "sync_videos")
    assert (summary["removal_suspects"], summary["removed"], summary["suspects_live"]) == (2, 2, 0)
    assert calls(sim, "video_query") == 1, "ceil(2 / 20) calls to confirm two removals"
    assert removed(clean_warehouse, open_id) == {deleted, hidden}
    sim.admin.reset_stats()
    run = run_dag("tiktok_video_backfill", mode="full")
    [summary] = xcom(run, "sync_videos")
    assert summary["removal_suspects"] == 0
    assert calls(sim, "video_query") == 0, "no removals, no extra calls"

    # The third page comes back well-formed and empty with has_more false: the listing ends after
    # 40 videos. The live videos it did not reach are suspects, and video/query returns them.
    gone = ids[50]
    sim.admin.delete_video(gone)
    sim.admin.set_faults("video_list", queue=[("pass", 2), ("no_videos", 1)])
    sim.admin.reset_stats()
    run = run_dag("tiktok_video_backfill", mode="full")
    assert str(run.state) == "success", states(run)
    [summary] = xcom(run, "sync_videos")
    assert summary["videos_seen"] == 40
    assert summary["removal_suspects"] == 58  # 98 stored live videos, 40 of them listed
    assert (summary["removed"], summary["suspects_live"], summary["removals_pending"]) == (0, 57, 1)
    assert summary["suspects_unconfirmed"] == 0
    assert calls(sim, "video_query") == 3 == summary["api_calls"]["/v2/video/query/"], "ceil(58 / 20)"
    assert removed(clean_warehouse, open_id) == {deleted, hidden}, "no live video is marked removed"
    an_hour_passes(clean_warehouse, open_id)
    run = run_dag("tiktok_video_backfill", mode="full")
    [summary] = xcom(run, "sync_videos")
    assert (summary["removal_suspects"], summary["removed"]) == (1, 1)
    assert removed(clean_warehouse, open_id) == {deleted, hidden, gone}

    # The hidden video is public again: the next sync restores it, and needs no video/query call.
    sim.admin.privatise_video(hidden, private=False)
    sim.admin.reset_stats()
    run = run_dag("tiktok_video_backfill", mode="full")
    [summary] = xcom(run, "sync_videos")
    assert (summary["removal_suspects"], summary["removed"]) == (0, 0)
    assert calls(sim, "video_query") == 0
    assert removed(clean_warehouse, open_id) == {deleted, gone}, "a video that comes back is restored"


def test_a_crash_while_confirming_resumes_with_the_stored_suspects(
    sim, run_dag, connect, tiktok_extra, frozen_clock, clean_warehouse
) -> None:
    open_id = connect(videos=60)
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    ids = sim.admin.video_ids(open_id)
    gone = {ids[25], ids[55]}
    for video_id in gone:
        sim.admin.delete_video(video_id)

    # The listing ends after one page (40 suspects); video/query answers once, then fails past the
    # hook's patience. The Airflow retry must neither list again nor lose or misjudge a suspect.
    tiktok_extra(max_attempts=2)
    sim.admin.set_faults("video_list", queue=[("pass", 1), ("no_videos", 1)])
    sim.admin.set_faults("video_query", queue=[("pass", 1), ("internal_error", 2)])
    sim.admin.reset_stats()
    run = run_dag("tiktok_video_backfill", mode="full")
    assert str(run.state) == "success", states(run)
    assert tries(run)[("sync_videos", 0)] == 2
    [summary] = xcom(run, "sync_videos")
    assert summary["resumed"] is True and summary["pages"] == 0, "the retry did not list again"
    assert calls(sim, "video_list") == 2, "the two pages of the first try only"
    assert (summary["removal_suspects"], summary["removals_pending"], summary["suspects_live"]) == (40, 2, 38)
    assert summary["handed_on"] == 0, "a retry of the same run confirms; it does not hand its suspects on"
    assert removed(clean_warehouse, open_id) == set()
    [(unfinished,)] = rows(
        clean_warehouse, "SELECT count(*) FROM tiktok.sync_state WHERE open_id = :o AND finished_at IS NULL", o=open_id
    )
    assert unfinished == 0
    [(left,)] = rows(clean_warehouse, "SELECT count(*) FROM tiktok.sync_seen_videos")
    assert left == 0
    an_hour_passes(clean_warehouse, open_id)
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    assert removed(clean_warehouse, open_id) == gone


def test_the_cover_refresh_marks_an_id_removed_only_when_a_later_run_agrees(
    sim, run_dag, connect, frozen_clock, clean_warehouse
) -> None:
    open_id = connect(videos=45)
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    stale = sorted(stored_ids(clean_warehouse, open_id))  # the cover refresh asks in id order
    gone = stale[3]
    sim.admin.delete_video(gone)

    # The first answer leaves out all 20 ids of its batch, live or not: 20 pending, none marked,
    # no extra call in this run.
    sim.admin.set_faults("video_query", queue=[("no_videos", 1)])
    sim.admin.reset_stats()
    run = run_dag("tiktok_cover_refresh", horizon_minutes=7 * 60)  # every cover: they all expire within 7 h
    assert str(run.state) == "success", states(run)
    [summary] = xcom(run, "refresh_covers")
    assert summary["requested"] == 45
    assert (summary["removal_suspects"], summary["removals_pending"], summary["removed"]) == (20, 20, 0)
    assert calls(sim, "video_query") == 3, "ceil(45 / 20) calls"
    assert removed(clean_warehouse, open_id) == set()

    # The next refresh minutes later: the 19 live ones come back (cleared); the deleted one is left
    # out again, but too soon to count as a second look.
    run = run_dag("tiktok_cover_refresh", horizon_minutes=7 * 60)
    [summary] = xcom(run, "refresh_covers")
    assert (summary["rechecked"], summary["removal_suspects"], summary["removed"]) == (20, 1, 0)
    [(pending,)] = rows(
        clean_warehouse,
        "SELECT count(*) FROM tiktok.videos WHERE open_id = :o AND missing_since IS NOT NULL",
        o=open_id,
    )
    assert pending == 1

    # An hour on: marked. With nothing stale, the refresh asks only about the pending id.
    an_hour_passes(clean_warehouse, open_id)
    sim.admin.reset_stats()
    run = run_dag("tiktok_cover_refresh", horizon_minutes=0)
    [summary] = xcom(run, "refresh_covers")
    assert (summary["requested"], summary["removed"], summary["removals_held"]) == (1, 1, 0)
    assert calls(sim, "video_query") == 1
    assert removed(clean_warehouse, open_id) == {gone}

    # Removed videos are asked about again for a week: one that comes back is restored.
    hidden = stale[10]
    sim.admin.privatise_video(hidden)
    run_dag("tiktok_cover_refresh", horizon_minutes=7 * 60)
    an_hour_passes(clean_warehouse, open_id)
    run_dag("tiktok_cover_refresh", horizon_minutes=0)
    assert removed(clean_warehouse, open_id) == {gone, hidden}
    sim.admin.privatise_video(hidden, private=False)
    sim.admin.reset_stats()
    run = run_dag("tiktok_cover_refresh", horizon_minutes=0)
    [summary] = xcom(run, "refresh_covers")
    assert (summary["rechecked"], summary["restored"]) == (2, 1)
    assert calls(sim, "video_query") == 1, "ceil(2 / 20): both recent removals in one call"
    assert removed(clean_warehouse, open_id) == {gone}
