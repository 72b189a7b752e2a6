"""Bad answers through the DAGs into Postgres: a clear error or a sanitised load, never a crash loop or a corrupt row.

The hook's own handling of each answer is tested in tests/provider/test_hook.py; here every fault
goes end to end: what the task's state is (failed once, not retried into a loop), what its error
says (account, endpoint, log_id, what to do), and what lands in the warehouse.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from chaos_support import rows, states, tries, xcom

pytestmark = pytest.mark.integration

LOG_ID = re.compile(r"log_id=\d{14}[0-9A-F]{20}")
VIDEOS = 60  # three pages
TRUTH_COLUMNS = ("title", "video_description", "duration", "like_count", "view_count")


def stored(engine: Any, open_id: str) -> dict[str, dict[str, Any]]:
    columns = ("id", "create_time", *TRUTH_COLUMNS, "removed_at")
    return {
        r[0]: dict(zip(columns, r, strict=True))
        for r in rows(engine, f"SELECT {', '.join(columns)} FROM tiktok.videos WHERE open_id = :o", o=open_id)
    }


def truth(sim: Any, open_id: str) -> dict[str, dict[str, Any]]:
    return {v["id"]: v for v in sim.admin.videos(open_id)}


def failure_text(capfd: Any, open_id: str) -> str:
    """The error the failed task logged for the account (the line an on-call engineer reads)."""
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if f"call for account {open_id} failed" in line]
    assert lines, "the task's error must name the account"
    return lines[-1]


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("unknown_error_code", "unknown error code 'sim_unknown_error'"),
        ("missing_data", "'data' is missing"),
        ("stuck_cursor", "cursor did not advance"),
        ("endless_has_more", "has_more stayed true over 51 empty pages"),
    ],
)
def test_contract_breaks_fail_the_account_once_with_a_clear_error_and_keep_the_committed_pages(
    sim, run_dag, connect, clean_warehouse, capfd, kind: str, says: str
) -> None:
    open_id = connect(videos=VIDEOS)
    # The first page goes through; every answer after it breaks the contract the same way.
    sim.admin.set_faults("video_list", queue=[("pass", 1), (kind, 100)])
    run = run_dag("tiktok_video_backfill", mode="full")
    assert states(run)[("sync_videos", 0)] == "failed"
    assert tries(run)[("sync_videos", 0)] == 1, "a contract break is not retried (no crash loop)"
    assert states(run)[("check_videos", -1)] == "success", "what was loaded is consistent"
    message = failure_text(capfd, open_id)
    assert says in message
    assert "/v2/video/list/" in message
    assert LOG_ID.search(message), message
    assert "support" in message or "clearing the task" in message, "the error says what to do next"
    first_page = set(sim.admin.video_ids(open_id)[:20])
    assert set(stored(clean_warehouse, open_id)) == first_page, "the good page is kept, nothing else"

    sim.admin.clear_faults()
    again = run_dag("tiktok_video_backfill", mode="full")  # what clearing the task does
    assert str(again.state) == "success"
    [summary] = xcom(again, "sync_videos")
    assert summary["resumed"] is True
    assert set(stored(clean_warehouse, open_id)) == set(sim.admin.video_ids(open_id))


def test_missing_data_and_unknown_codes_on_the_profile_fail_once_and_write_nothing(
    sim, run_dag, connect, clean_warehouse, capfd
) -> None:
    first, second = connect(videos=1), connect(videos=1)
    for kind in ("missing_data", "unknown_error_code"):
        sim.admin.set_faults("user_info", queue=[(kind, 1)])
        run = run_dag("tiktok_profile_snapshot", accounts=[first])
        assert tries(run)[("snapshot_profile", 0)] == 1
        assert states(run)[("snapshot_profile", 0)] == "failed"
        assert LOG_ID.search(failure_text(capfd, first))
    assert rows(clean_warehouse, "SELECT count(*) FROM tiktok.profile_snapshots") == [(0,)]
    assert str(run_dag("tiktok_profile_snapshot").state) == "success"
    assert {r[0] for r in rows(clean_warehouse, "SELECT open_id FROM tiktok.profile_snapshots")} == {first, second}


@pytest.mark.parametrize("kind", ["html_503", "truncated"])
def test_html_pages_and_cut_off_json_are_retried_by_the_hook(sim, run_dag, connect, clean_warehouse, kind) -> None:
    open_id = connect(videos=VIDEOS)
    for endpoint in ("user_info", "video_list", "video_query"):
        sim.admin.set_faults(endpoint, queue=[(kind, 2)])
    for dag_id, conf in (
        ("tiktok_profile_snapshot", {}),
        ("tiktok_video_backfill", {"mode": "full"}),
        ("tiktok_cover_refresh", {"horizon_minutes": 7 * 60}),
    ):
        run = run_dag(dag_id, **conf)
        assert str(run.state) == "success", states(run)
        assert all(n == 1 for n in tries(run).values()), "the hook's retries were enough"
    assert sim.admin.stats()["endpoints"]["video_query"]["faults"] == {kind: 2}
    assert set(stored(clean_warehouse, open_id)) == set(truth(sim, open_id))


def test_sanitised_values_land_clean_or_keep_the_stored_value(
    sim, run_dag, connect, frozen_clock, clean_warehouse
) -> None:
    open_id = connect(videos=VIDEOS)
    ids = sim.admin.video_ids(open_id)
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    clean = stored(clean_warehouse, open_id)
    expected = truth(sim, open_id)
    assert all(clean[i][c] == expected[i][c] for i in ids for c in TRUTH_COLUMNS)

    # One page each: strings where integers belong, counts above int64, NUL bytes in captions,
    # 10,000-character captions, ids that are not numbers.
    kinds = ["wrong_types", "int64_overflow", "nul_bytes"]
    sim.admin.set_faults("video_list", queue=[(k, 1) for k in kinds])
    run = run_dag("tiktok_video_backfill", mode="full")
    assert str(run.state) == "success"
    [summary] = xcom(run, "sync_videos")
    assert summary["sanitised_values"] >= 3 * 20
    assert summary["removed"] == 0
    after = stored(clean_warehouse, open_id)
    assert after == clean, "a dropped value keeps the stored one; NUL bytes are stripped to the true caption"

    sim.admin.set_faults("video_list", queue=[("long_strings", 1), ("non_numeric_id", 1)])
    run = run_dag("tiktok_video_backfill", mode="full")
    assert str(run.state) == "success", states(run)
    [summary] = xcom(run, "sync_videos")
    assert summary["removed"] == 0, "videos whose ids came back garbled are not taken for removed"
    after = stored(clean_warehouse, open_id)
    assert set(after) == set(ids), "a non-numeric id never becomes a row"
    assert all(after[i]["removed_at"] is None for i in ids)
    long_titles = [v["title"] for v in after.values() if v["title"] and len(v["title"]) == 10_000]
    assert len(long_titles) == 20, "a 10,000-character caption is stored whole (Postgres text has no limit)"
    assert all("\x00" not in (v["title"] or "") for v in after.values())


def test_garbled_ids_in_a_cover_refresh_do_not_mark_videos_removed(
    sim, run_dag, connect, frozen_clock, clean_warehouse
) -> None:
    open_id = connect(videos=30)
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    sim.admin.set_faults("video_query", queue=[("non_numeric_id", 1)])
    run = run_dag("tiktok_cover_refresh", horizon_minutes=7 * 60)
    assert str(run.state) == "success", states(run)
    [summary] = xcom(run, "refresh_covers")
    assert summary["removed"] == 0
    assert all(v["removed_at"] is None for v in stored(clean_warehouse, open_id).values())


def test_profile_with_bad_values_is_stored_sanitised(sim, run_dag, connect, frozen_clock, clean_warehouse) -> None:
    open_id = connect(videos=1)
    user = sim.admin.account(open_id)["user"]
    for kind in ("nul_bytes", "int64_overflow", "wrong_types", "long_strings"):
        sim.admin.set_faults("user_info", queue=[(kind, 1)])
        run = run_dag("tiktok_profile_snapshot")
        assert str(run.state) == "success", (kind, states(run))
        [(name, bio, followers)] = rows(
            clean_warehouse,
            "SELECT display_name, bio_description, follower_count FROM tiktok.profile_snapshots WHERE open_id = :o",
            o=open_id,
        )
        assert "\x00" not in name and "\x00" not in bio
        if kind == "long_strings":
            assert len(name) == len(bio) == 10_000
        else:
            assert (name, bio) == (user["display_name"], user["bio_description"])
        assert followers == user["follower_count"], "a dropped count keeps the value stored earlier today"


def test_a_lost_token_answer_marks_the_account_for_reconnection_and_fails_once(
    sim, run_dag, connect, clean_warehouse, capfd
) -> None:
    """TikTok rotates the refresh token when it answers; if that answer is lost, nothing can replay it."""
    lost, fine = connect(videos=1), connect(videos=1)
    sim.admin.expire_access_tokens(lost)
    sim.admin.set_faults("oauth_token", queue=[("truncated", 1)])
    run = run_dag("tiktok_profile_snapshot")
    by_account = {s["open_id"]: s for s in xcom(run, "snapshot_profile")}
    assert set(by_account) == {fine}
    failed = [key for key, state in states(run).items() if state == "failed"]
    assert len(failed) == 1 and tries(run)[failed[0]] == 1, "no retries against a dead refresh token"
    message = failure_text(capfd, lost)
    assert "invalid_grant" in message
    assert "lost" in message, "the error says why the refresh token died"
    assert "tiktok_connect_account" in message, "and what to do"
    assert rows(clean_warehouse, "SELECT status FROM tiktok.accounts WHERE open_id = :o", o=lost) == [
        ("reauth_required",)
    ]
    assert sim.admin.stats()["oauth"]["token"]["refresh_token"] == {"ok": 1, "invalid_grant": 1}
    # the next run leaves the account out instead of failing on it again
    assert str(run_dag("tiktok_profile_snapshot").state) == "success"
