"""Audit 2 reproducers: live videos marked removed when video/query is the only second opinion.

The simulator deletes nothing here: every video it holds is live (its ground truth), so every
``removed_at`` these runs set is a live video wrongly marked.
"""

from __future__ import annotations

from typing import Any

import pytest
from chaos_support import rows, states

pytestmark = pytest.mark.integration


def removed(engine: Any, open_id: str) -> int:
    q = "SELECT count(*) FROM tiktok.videos WHERE open_id = :o AND removed_at IS NOT NULL"
    return rows(engine, q, o=open_id)[0][0]


def test_a_cover_refresh_during_a_video_query_blip_marks_no_live_video_removed(
    sim, run_dag, connect, frozen_clock, clean_warehouse
) -> None:
    open_id = connect(videos=60)
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    # video/query answers "ok, no videos" for a few seconds: both looks of the cover refresh.
    sim.admin.set_faults("video_query", queue=[("no_videos", 6)])
    run = run_dag("tiktok_cover_refresh", horizon_minutes=7 * 60)
    print("cover refresh:", states(run), "removed:", removed(clean_warehouse, open_id), "of 60 live")
    # The daily incremental (7 days) does not bring the months-old videos back.
    sim.admin.clear_faults()
    run_dag("tiktok_video_backfill", mode="incremental", lookback_days=7)
    print("after the next incremental:", removed(clean_warehouse, open_id), "still marked")
    assert removed(clean_warehouse, open_id) == 0


def test_a_full_backfill_whose_listing_and_query_both_blip_marks_no_live_video_removed(
    sim, run_dag, connect, frozen_clock, clean_warehouse
) -> None:
    open_id = connect(videos=100)
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    # One list page ends the listing early ("videos": [], has_more false); the first query call
    # (20 of the 80 suspects) answers "ok, no videos" too.
    sim.admin.set_faults("video_list", queue=[("pass", 1), ("no_videos", 1)])
    sim.admin.set_faults("video_query", queue=[("no_videos", 1)])
    run = run_dag("tiktok_video_backfill", mode="full")
    print("full:", states(run), "removed:", removed(clean_warehouse, open_id), "of 100 live")
    assert removed(clean_warehouse, open_id) == 0


def test_the_run_after_a_failed_confirmation_still_lists_new_videos(
    sim, run_dag, connect, tiktok_extra, frozen_clock, clean_warehouse
) -> None:
    import time

    from chaos_support import xcom

    open_id = connect(videos=60)
    sim.admin.add_videos(open_id, 30, create_time=int(frozen_clock - 3600))  # 30 recent videos
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    # Today's incremental: the listing ends early, then video/query fails past every retry.
    tiktok_extra(max_attempts=2)
    sim.admin.set_faults("video_list", queue=[("no_videos", 1)])
    sim.admin.set_faults("video_query", queue=[("internal_error", 100)])
    failed = run_dag("tiktok_video_backfill", mode="incremental", lookback_days=7)
    assert states(failed)[("sync_videos", 0)] == "failed"
    sim.admin.clear_faults()
    # Tomorrow: a creator posted a video; the API is healthy again. (The simulator lists no video
    # newer than its clock, so its clock moves on to the posting time.)
    sim.admin.set_clock(time.time() + 1, frozen=True)
    [new] = sim.admin.add_videos(open_id, 1, create_time=int(time.time()))
    run = run_dag("tiktok_video_backfill", mode="incremental", lookback_days=7)
    [summary] = xcom(run, "sync_videos")
    print("next day:", states(run), {k: summary[k] for k in ("resumed", "pages", "removal_suspects", "removed")})
    stored = rows(clean_warehouse, "SELECT count(*) FROM tiktok.videos WHERE id = :i", i=new)[0][0]
    assert stored == 1, "the next day's run loaded the new video"
    assert summary["resumed"] is False and summary["pages"] >= 1, "a fresh listing, in the same task"
    assert summary["handed_on"] == 30, "the stuck sync's 30 unanswered suspects were handed on, none marked"
    assert removed(clean_warehouse, open_id) == 0
    [(unfinished,)] = rows(
        clean_warehouse, "SELECT count(*) FROM tiktok.sync_state WHERE open_id = :o AND finished_at IS NULL", o=open_id
    )
    assert unfinished == 0


def test_videos_hidden_for_a_while_are_held_by_the_share_guard_not_removed(
    sim, run_dag, connect, frozen_clock, clean_warehouse, caplog
) -> None:
    from chaos_support import xcom
    from sqlalchemy import text

    open_id = connect(videos=60)
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    hidden = sim.admin.video_ids(open_id)[:40]
    for video_id in hidden:  # made private for a while: video/query leaves them out
        sim.admin.privatise_video(video_id)
    run_dag("tiktok_cover_refresh", horizon_minutes=7 * 60)
    with clean_warehouse.begin() as conn:  # an hour passes
        conn.execute(text("UPDATE tiktok.videos SET missing_since = missing_since - interval '2 hours'"))
    caplog.clear()
    sim.admin.reset_stats()
    run = run_dag("tiktok_cover_refresh", horizon_minutes=0)
    [summary] = xcom(run, "refresh_covers")
    assert (summary["requested"], summary["removed"], summary["removals_held"]) == (40, 0, 40)
    assert sim.admin.stats()["endpoints"]["video_query"]["requests"] == 2, "ceil(40 / 20)"
    assert removed(clean_warehouse, open_id) == 0
    [warning] = [r.getMessage() for r in caplog.records if "removals_held=40" in r.getMessage()]
    assert open_id in warning and "40 of its 60 live videos" in warning
    # Public again: the next refresh clears every pending removal.
    for video_id in hidden:
        sim.admin.privatise_video(video_id, private=False)
    run_dag("tiktok_cover_refresh", horizon_minutes=0)
    q = "SELECT count(*) FROM tiktok.videos WHERE open_id = :o AND missing_since IS NOT NULL"
    assert rows(clean_warehouse, q, o=open_id)[0][0] == 0
