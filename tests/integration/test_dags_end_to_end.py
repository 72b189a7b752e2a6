"""The four DAGs end to end through Airflow's dag.test(), against the simulator and the real Postgres."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from dag_support import rows as table
from dag_support import states, xcom
from sqlalchemy import text

pytestmark = pytest.mark.integration

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture
def dags() -> Any:
    """Freshly parsed DAGs: dag.test() leaves a run's conf in the DAG's params."""
    from tiktok_tools.dagrun import Dags

    return Dags(DAGS_DIR)


@pytest.fixture
def run_dag(dags, tiktok_connections, clean_warehouse) -> Callable[..., Any]:
    """Run a DAG through dag.test() (every param, defaults first) and return the DagRun."""
    return dags.run


def warehouse_state(engine) -> dict[str, list[tuple]]:
    """Everything a run writes, minus the columns that legitimately move on a re-run."""
    return {
        "accounts": table(
            engine, "SELECT open_id, display_name, username, status, scopes FROM tiktok.accounts ORDER BY 1"
        ),
        "profile_snapshots": table(
            engine,
            "SELECT open_id, snapshot_date, follower_count, following_count, likes_count, video_count, display_name,"
            " bio_description, is_verified FROM tiktok.profile_snapshots ORDER BY 1, 2",
        ),
        "videos": table(
            engine,
            "SELECT id, open_id, create_time, title, video_description, duration, height, width, share_url,"
            " embed_link, removed_at IS NOT NULL FROM tiktok.videos ORDER BY 1",
        ),
        "video_snapshots": table(engine, "SELECT video_id, snapshot_date FROM tiktok.video_snapshots ORDER BY 1, 2"),
    }


@pytest.fixture
def connect_via_dag(sim, run_dag) -> Callable[..., str]:
    """Create a simulator account and connect it through the tiktok_connect_account DAG."""
    from tiktok_sim.testing import DEFAULT_SCOPES
    from tiktok_tools.simaccounts import connect_conf

    def connect(videos: int = 30, scopes: Any = DEFAULT_SCOPES) -> str:
        account = sim.admin.create_account(videos=videos)
        run = run_dag("tiktok_connect_account", **connect_conf(sim.admin, account["open_id"], scopes))
        assert str(run.state) == "success", states(run)
        [summary] = xcom(run, "connect")
        assert summary["open_id"] == account["open_id"]
        assert summary["scopes"] == sorted(scopes)
        return account["open_id"]

    return connect


def test_connect_account_stores_encrypted_tokens_and_reconnect_reactivates(
    sim, run_dag, connect_via_dag, clean_warehouse
) -> None:
    from tiktok_tools.simaccounts import connect_conf

    open_id = connect_via_dag(videos=3)
    [(status, name, enc)] = table(
        clean_warehouse,
        "SELECT status, display_name, access_token_enc FROM tiktok.accounts WHERE open_id = :o",
        o=open_id,
    )
    assert status == "active"
    assert name == sim.admin.account(open_id)["display_name"]
    assert b"act." not in bytes(enc)

    with clean_warehouse.begin() as conn:
        conn.execute(text("UPDATE tiktok.accounts SET status = 'reauth_required' WHERE open_id = :o"), {"o": open_id})
    run = run_dag("tiktok_connect_account", **connect_conf(sim.admin, open_id, ["user.info.basic", "video.list"]))
    assert str(run.state) == "success"
    [(status, scopes)] = table(
        clean_warehouse, "SELECT status, scopes FROM tiktok.accounts WHERE open_id = :o", o=open_id
    )
    assert status == "active"
    assert sorted(scopes) == ["user.info.basic", "video.list"]


def test_connect_with_a_used_code_fails_at_once_with_advice(sim, run_dag, connect_via_dag) -> None:
    from tiktok_tools.simaccounts import connect_conf

    account = sim.admin.create_account(videos=1)
    conf = connect_conf(sim.admin, account["open_id"])
    assert str(run_dag("tiktok_connect_account", **conf).state) == "success"
    run = run_dag("tiktok_connect_account", **conf)
    assert str(run.state) == "failed"
    assert states(run)[("connect", -1)] == "failed", "invalid_grant must not be retried"


def test_profile_snapshot_writes_one_row_per_account_under_the_capture_date(
    sim, run_dag, connect_via_dag, clean_warehouse
) -> None:
    first = connect_via_dag(videos=2)
    second = connect_via_dag(videos=2, scopes=["user.info.basic", "video.list"])  # no stats scope
    run = run_dag("tiktok_profile_snapshot")
    assert str(run.state) == "success", states(run)
    rows = table(
        clean_warehouse,
        "SELECT open_id, snapshot_date, follower_count, (captured_at AT TIME ZONE 'UTC')::date"
        " FROM tiktok.profile_snapshots ORDER BY open_id",
    )
    assert {r[0] for r in rows} == {first, second}
    for open_id, snapshot_date, followers, captured in rows:
        assert snapshot_date == captured
        if open_id == first:
            assert followers == sim.admin.account(first)["user"]["follower_count"]
        else:
            assert followers is None, "a field outside the scopes is never asked for"
    summaries = xcom(run, "snapshot_profile")
    assert len(summaries) == 2
    assert all(s["api_calls"] == {"/v2/user/info/": 1} for s in summaries)


def test_one_revoked_account_fails_while_the_others_succeed(
    sim, run_dag, connect_via_dag, clean_warehouse, monkeypatch
) -> None:
    import json

    from receivers import http_receiver

    good = connect_via_dag(videos=2)
    bad = connect_via_dag(videos=2)
    sim.admin.revoke(bad)
    with http_receiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url}))
        run = run_dag("tiktok_profile_snapshot")
        messages = receiver.json()
    reconnect = [m for m in messages if m["kind"] == "reconnect_needed"]
    assert [m["facts"]["open_id"] for m in reconnect] == [bad], messages  # once, not per retry
    task_states = states(run)
    assert str(run.state) == "failed"
    mapped = {k: v for k, v in task_states.items() if k[0] == "snapshot_profile"}
    assert sorted(mapped.values()) == ["failed", "success"]
    assert task_states[("check_profile_snapshots", -1)] == "success", "checks run whatever happened"
    snapshot_ids = [r[0] for r in table(clean_warehouse, "SELECT open_id FROM tiktok.profile_snapshots")]
    assert snapshot_ids == [good]
    [(status,)] = table(clean_warehouse, "SELECT status FROM tiktok.accounts WHERE open_id = :o", o=bad)
    assert status == "reauth_required"
    # the next run leaves the disconnected account out and succeeds
    assert str(run_dag("tiktok_profile_snapshot").state) == "success"


def test_full_backfill_then_incremental_detects_new_and_removed_videos(
    sim, run_dag, connect_via_dag, clean_warehouse
) -> None:
    open_id = connect_via_dag(videos=130)
    sim.admin.reset_stats()
    run = run_dag("tiktok_video_backfill", mode="full")
    assert str(run.state) == "success", states(run)
    [summary] = xcom(run, "sync_videos")
    assert summary["api_calls"]["/v2/video/list/"] == math.ceil(130 / 20)
    assert sim.admin.stats()["endpoints"]["video_list"]["requests"] == math.ceil(130 / 20)
    ids = {r[0] for r in table(clean_warehouse, "SELECT id FROM tiktok.videos WHERE removed_at IS NULL")}
    assert ids == set(sim.admin.video_ids(open_id))
    [(snapshots,)] = table(clean_warehouse, "SELECT count(*) FROM tiktok.video_snapshots")
    assert snapshots == 130

    newest = sim.admin.video_ids(open_id)[0]
    sim.admin.delete_video(newest)
    [added] = sim.admin.add_videos(open_id, 1)
    run = run_dag("tiktok_video_backfill", mode="incremental", lookback_days=3650)
    assert str(run.state) == "success", states(run)
    rows = dict(table(clean_warehouse, "SELECT id, missing_since IS NOT NULL FROM tiktok.videos"))
    assert rows[added] is False
    assert rows[newest] is True, "missing once: a pending removal"
    # An hour on (the stored first miss moves back), the next incremental marks it.
    with clean_warehouse.begin() as conn:
        conn.execute(text("UPDATE tiktok.videos SET missing_since = missing_since - interval '2 hours'"))
    run = run_dag("tiktok_video_backfill", mode="incremental", lookback_days=3650)
    assert str(run.state) == "success", states(run)
    rows = dict(table(clean_warehouse, "SELECT id, removed_at IS NOT NULL FROM tiktok.videos"))
    assert rows[added] is False
    assert rows[newest] is True
    assert sum(rows.values()) == 1


def test_crash_mid_backfill_then_retry_resumes_and_matches_a_clean_run(
    sim, run_dag, connect_via_dag, clean_warehouse
) -> None:
    open_id = connect_via_dag(videos=200)
    # three pages go through, then the fourth answer breaks the contract: the task fails at once
    sim.admin.set_faults("video_list", queue=[("pass", 3), ("missing_data", 1)])
    sim.admin.reset_stats()
    crashed = run_dag("tiktok_video_backfill", mode="full")
    assert states(crashed)[("sync_videos", 0)] == "failed"
    [(pages,)] = table(
        clean_warehouse,
        "SELECT pages FROM tiktok.sync_state WHERE open_id = :o AND finished_at IS NULL",
        o=open_id,
    )
    assert pages == 3
    [(stored,)] = table(clean_warehouse, "SELECT count(*) FROM tiktok.videos")
    assert stored == 60, "the three committed pages, nothing of the broken one"

    resumed = run_dag("tiktok_video_backfill", mode="full")  # what on-call's "clear" does
    assert str(resumed.state) == "success", states(resumed)
    [summary] = xcom(resumed, "sync_videos")
    assert summary["resumed"] is True
    list_calls = sim.admin.stats()["endpoints"]["video_list"]["requests"]
    assert list_calls == math.ceil(200 / 20) + 1, "at most the broken page is fetched twice"
    resumed_state = warehouse_state(clean_warehouse)
    assert {r[0] for r in resumed_state["videos"]} == set(sim.admin.video_ids(open_id))

    clean = run_dag("tiktok_video_backfill", mode="full")  # a clean full run over the same data
    assert str(clean.state) == "success"
    assert warehouse_state(clean_warehouse) == resumed_state


def test_token_expiring_mid_run_is_refreshed_once(sim, run_dag, connect_via_dag, clean_warehouse) -> None:
    open_id = connect_via_dag(videos=200)
    sim.admin.set_faults("video_list", probabilities={"slow": 1.0}, slow_seconds=0.3)
    sim.admin.reset_stats()
    stop = threading.Event()

    def expire_after_three_pages() -> None:
        while not stop.is_set():
            if sim.admin.stats()["endpoints"].get("video_list", {}).get("requests", 0) >= 3:
                sim.admin.expire_access_tokens(open_id)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=expire_after_three_pages)
    watcher.start()
    try:
        run = run_dag("tiktok_video_backfill", mode="full")
    finally:
        stop.set()
        watcher.join()
    assert str(run.state) == "success", states(run)
    stats = sim.admin.stats()
    assert stats["oauth"]["token"]["refresh_token"] == {"ok": 1}
    assert stats["endpoints"]["video_list"]["errors"] == {"access_token_invalid": 1}
    [(count,)] = table(clean_warehouse, "SELECT count(*) FROM tiktok.videos WHERE open_id = :o", o=open_id)
    assert count == 200


def test_cover_refresh_costs_ceil_stale_over_20_calls_per_account(
    sim, run_dag, connect_via_dag, clean_warehouse
) -> None:
    first = connect_via_dag(videos=45)
    second = connect_via_dag(videos=30)
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    stale = {first: 25, second: 7}
    for open_id, n in stale.items():
        with clean_warehouse.begin() as conn:
            conn.execute(
                text(
                    "UPDATE tiktok.videos SET cover_expires_at = now() - interval '1 minute' WHERE id IN"
                    " (SELECT id FROM tiktok.videos WHERE open_id = :o ORDER BY id LIMIT :n)"
                ),
                {"o": open_id, "n": n},
            )
    gone = table(
        clean_warehouse,
        "SELECT id FROM tiktok.videos WHERE open_id = :o AND cover_expires_at < now() ORDER BY id LIMIT 1",
        o=first,
    )[0][0]
    sim.admin.delete_video(gone)
    sim.admin.reset_stats()
    run = run_dag("tiktok_cover_refresh")
    assert str(run.state) == "success", states(run)
    per_account = sim.admin.stats()["accounts"]
    for open_id, n in stale.items():
        assert per_account[open_id]["endpoints"] == {"video_query": math.ceil(n / 20)}
    rows = table(
        clean_warehouse,
        "SELECT id, cover_image_url, cover_expires_at > now() + interval '5 hours', removed_at IS NOT NULL"
        " FROM tiktok.videos WHERE open_id = :o",
        o=first,
    )
    assert all(fresh for vid, _, fresh, removed in rows if vid != gone)
    assert [vid for vid, _, _, removed in rows if removed] == [], "one miss marks nothing"
    url = next(u for vid, u, _, _ in rows if vid != gone)
    assert requests.get(url, timeout=10).headers["content-type"] == "image/jpeg"

    wide = run_dag("tiktok_cover_refresh", horizon_minutes=7 * 60)  # every cover expires within 7 h
    summaries = {s["open_id"]: s for s in xcom(wide, "refresh_covers")}
    assert summaries[second]["requested"] == 30
    assert summaries[second]["api_calls"] == {"/v2/video/query/": 2}

    # An hour on (the stored first miss moves back), the hourly refresh asks about the pending id
    # again (one call; the other account, with nothing stale or pending, makes none) and marks it.
    with clean_warehouse.begin() as conn:
        conn.execute(text("UPDATE tiktok.videos SET missing_since = missing_since - interval '2 hours'"))
    sim.admin.reset_stats()
    run = run_dag("tiktok_cover_refresh")
    per_account = sim.admin.stats()["accounts"]
    assert per_account[first]["endpoints"] == {"video_query": 1}
    assert per_account.get(second, {}).get("endpoints", {}) == {}
    removed = table(clean_warehouse, "SELECT id FROM tiktok.videos WHERE removed_at IS NOT NULL")
    assert removed == [(gone,)]


def test_a_capped_cover_refresh_spends_it_on_recent_and_most_viewed_videos_and_says_what_it_left(
    sim, run_dag, connect_via_dag, clean_warehouse, monkeypatch
) -> None:
    open_id = connect_via_dag(videos=50)
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    with clean_warehouse.begin() as conn:
        conn.execute(text("UPDATE tiktok.videos SET cover_expires_at = now() - interval '1 minute'"))
    want = [
        r[0]
        for r in table(
            clean_warehouse,
            "SELECT id FROM tiktok.videos WHERE open_id = :o"
            " ORDER BY create_time DESC NULLS LAST, view_count DESC NULLS LAST, id LIMIT 20",
            o=open_id,
        )
    ]
    monkeypatch.setenv("AIRFLOW__TIKTOK__MAX_COVERS_PER_ACCOUNT", "20")
    sim.admin.reset_stats()
    run = run_dag("tiktok_cover_refresh")
    assert str(run.state) == "success", states(run)
    [summary] = xcom(run, "refresh_covers")
    assert (summary["requested"], summary["covers_left"]) == (20, 30)
    assert sim.admin.stats()["accounts"][open_id]["endpoints"] == {"video_query": 1}
    refreshed = table(clean_warehouse, "SELECT id FROM tiktok.videos WHERE cover_expires_at > now() ORDER BY id")
    assert [r[0] for r in refreshed] == sorted(want), "the 20 most recent (then most viewed) went first"


def test_running_every_dag_twice_changes_nothing(sim, run_dag, connect_via_dag, clean_warehouse) -> None:
    connect_via_dag(videos=60)
    connect_via_dag(videos=25)
    sim.admin.freeze_clock()
    try:
        for dag_id, conf in [
            ("tiktok_profile_snapshot", {}),
            ("tiktok_video_backfill", {"mode": "full"}),
            ("tiktok_cover_refresh", {}),
        ]:
            assert str(run_dag(dag_id, **conf).state) == "success"
        before = full_state(clean_warehouse)
        for dag_id, conf in [
            ("tiktok_profile_snapshot", {}),
            ("tiktok_video_backfill", {"mode": "full"}),
            ("tiktok_video_backfill", {"mode": "incremental", "lookback_days": 3650}),
            ("tiktok_cover_refresh", {}),
        ]:
            assert str(run_dag(dag_id, **conf).state) == "success"
        assert full_state(clean_warehouse) == before
    finally:
        sim.admin.unfreeze_clock()


def full_state(engine) -> dict[str, list[tuple]]:
    """Every column of every data table, except bookkeeping (syncs, when a profile was last checked)."""
    return {
        name: table(engine, f"SELECT to_jsonb(t) - 'checked_at' FROM tiktok.{name} t ORDER BY 1")
        for name in ("profile_snapshots", "videos", "video_snapshots")
    }


def test_connect_with_a_refresh_token_variable_rotates_it_at_once(sim, run_dag, connect_via_dag, hook) -> None:
    # A refresh token comes in through a Variable (the run's conf refuses one: it would stay there).
    from airflow.models import Variable

    open_id = connect_via_dag(videos=1)
    held = hook.token_store.get(open_id).refresh_token
    Variable.set("tiktok_refresh_token_e2e", held)  # noqa: AIR311 - as an admin would
    run = run_dag("tiktok_connect_account", refresh_token_variable="tiktok_refresh_token_e2e")
    assert str(run.state) == "success", states(run)
    assert xcom(run, "connect")[0]["open_id"] == open_id
    assert hook.token_store.get(open_id).refresh_token != held
    assert Variable.get("tiktok_refresh_token_e2e", default_var=None) is None  # noqa: AIR311
    from tiktok_provider.errors import TikTokReauthRequired

    with pytest.raises(TikTokReauthRequired):  # the token that was handed over is dead
        hook.refresh_grant(held)


def test_profile_snapshot_expires_lapsed_consent_and_warns_before_it_runs_out(
    run_dag, connect_via_dag, clean_warehouse, monkeypatch
) -> None:
    import json

    from receivers import http_receiver

    lapsed = connect_via_dag(videos=1)
    soon = connect_via_dag(videos=1)
    fine = connect_via_dag(videos=1)
    with clean_warehouse.begin() as conn:
        conn.execute(
            text("UPDATE tiktok.accounts SET refresh_expires_at = now() - interval '1 hour' WHERE open_id = :o"),
            {"o": lapsed},
        )
        # crossed its 7-day warning an hour ago: on-call hears of it today, and on no other day till 1 day
        conn.execute(
            text(
                "UPDATE tiktok.accounts SET refresh_expires_at = now() + interval '7 days' - interval '1 hour' "
                "WHERE open_id = :o"
            ),
            {"o": soon},
        )

    with http_receiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url}))
        run = run_dag("tiktok_profile_snapshot")
        messages = receiver.json()

    assert str(run.state) == "success", states(run)
    # on-call hears once about each: the account to reconnect, the consent running out
    assert sorted((m["kind"], m["facts"].get("open_id")) for m in messages) == sorted(
        [("reconnect_needed", lapsed), ("consent_expiring", soon)]
    ), messages
    [check] = xcom(run, "check_consent")
    assert check["warnings"] == {soon: 7}
    snapshotted = {r["open_id"] for r in xcom(run, "snapshot_profile")}
    assert snapshotted == {soon, fine}  # the lapsed account is never tried
    status = dict(table(clean_warehouse, "SELECT open_id, status FROM tiktok.accounts"))
    assert status == {lapsed: "reauth_required", soon: "active", fine: "active"}


def test_loads_archive_images_keep_young_captures_and_publish_assets(
    sim, run_dag, connect_via_dag, clean_warehouse, tmp_path, monkeypatch
) -> None:
    """The #15/#16 pieces wired in: the avatar and covers archived, captures kept for free, Assets published."""
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import delete, select

    from tiktok_pipeline.assets import PROFILE_SNAPSHOTS

    archive = tmp_path / "covers"
    monkeypatch.setenv("AIRFLOW__TIKTOK__COVER_ARCHIVE_PATH", f"file://{archive}")
    open_id = connect_via_dag(videos=12)
    young = sim.admin.add_videos(open_id, 3, create_time=int(time.time()) - 3 * 3600)
    with create_session() as session:
        session.execute(delete(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == "tiktok_marts_refresh"))

    run = run_dag("tiktok_profile_snapshot")
    assert str(run.state) == "success", states(run)
    assert states(run)[("publish_assets", -1)] == "success"
    [profile] = xcom(run, "snapshot_profile")
    assert profile["archive"]["new_versions"] == 1 and profile["archive"]["failed"] == 0
    with create_session() as session:
        asset_id = session.scalar(select(AssetModel.id).where(AssetModel.uri == PROFILE_SNAPSHOTS.uri))
        event = session.scalars(
            select(AssetEvent).where(AssetEvent.asset_id == asset_id).order_by(AssetEvent.id.desc())
        ).first()
        queued = session.scalars(
            select(AssetDagRunQueue.asset_id).where(AssetDagRunQueue.target_dag_id == "tiktok_marts_refresh")
        ).all()
    assert event.extra["accounts"] == 1 and event.extra["rows"] == 1
    assert asset_id in queued, "the marts DAG is queued on the profile snapshots"

    sim.admin.reset_stats()
    run = run_dag("tiktok_video_backfill", mode="full")
    assert str(run.state) == "success", states(run)
    [sync] = xcom(run, "sync_videos")
    assert sync["snapshots_written"] == 15 and sync["captures"] == 3
    assert sim.admin.stats()["accounts"][open_id]["endpoints"] == {"video_list": 1}, "history costs no call"

    sim.admin.reset_stats()
    run = run_dag("tiktok_cover_refresh", horizon_minutes=7 * 60)  # every cover
    assert str(run.state) == "success", states(run)
    [refresh] = xcom(run, "refresh_covers")
    assert sim.admin.stats()["accounts"][open_id]["endpoints"] == {"video_query": 1}, "history costs no call"
    assert refresh["captures"] == 3  # the same young videos, captured again by the refresh's query
    assert refresh["archive"]["new_versions"] == 15 and refresh["archive"]["failed"] == 0
    captures = table(clean_warehouse, "SELECT video_id, source FROM tiktok.video_captures ORDER BY source, video_id")
    assert captures == [(v, "list") for v in sorted(young)] + [(v, "query") for v in sorted(young)]
    archived = table(clean_warehouse, "SELECT kind, count(*) FROM tiktok.cover_archive GROUP BY kind ORDER BY kind")
    assert archived == [("avatar", 1), ("cover", 15)]
    assert len([p for p in archive.rglob("*") if p.is_file()]) >= 2

    again = run_dag("tiktok_cover_refresh", horizon_minutes=7 * 60)
    [second] = xcom(again, "refresh_covers")
    assert second["archive"]["new_versions"] == 0 and second["archive"]["checked"] == 15

    # The creator leaves and the account is purged: the next daily check deletes its images from storage.
    from tiktok_warehouse.accounts_admin import AccountsAdmin

    stored = [p for p in archive.rglob("*") if p.is_file()]
    admin = AccountsAdmin(clean_warehouse)
    admin.mark_disconnected(open_id, "test", now=datetime.now(UTC))
    admin.purge(open_id)
    run = run_dag("tiktok_profile_snapshot")
    assert str(run.state) == "success", states(run)
    [check] = xcom(run, "check_consent")
    assert check["blobs_deleted"] == 16 and check["blobs_not_deleted"] == 0
    assert stored and not [p for p in stored if p.exists()], "the purged creator's images are still stored"
    assert table(clean_warehouse, "SELECT count(*) FROM tiktok.archive_blobs") == [(0,)]


def test_a_failed_account_task_names_the_account_logs_its_request_and_links_to_runbook_and_account(
    sim, run_dag, connect_via_dag, clean_warehouse, capfd, caplog
) -> None:
    """What on-call sees of a failed account task: the log, and the extra links the API serves."""
    from airflow.models.dag import DagModel  # noqa: F401  (the DB models are set up)
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from tiktok_provider.errors import account_label

    bad = connect_via_dag(videos=1)
    [(name,)] = table(clean_warehouse, "SELECT display_name FROM tiktok.accounts WHERE open_id = :o", o=bad)
    sim.admin.revoke(bad)
    caplog.set_level("INFO")
    capfd.readouterr()
    caplog.clear()
    run = run_dag("tiktok_profile_snapshot")
    out = "".join(capfd.readouterr()) + caplog.text  # structlog lines, then the stdlib loggers' lines
    assert states(run)[("snapshot_profile", 0)] == "failed"
    # As the error names it: a simulated name may hold a zero-width joiner (an emoji), shown as a space.
    clean = f"Account {account_label(bad, name)}: TikTok /v2/oauth/token/ call"
    error_lines = [line for line in out.splitlines() if "[error" in line and clean in line]
    assert error_lines, out[-3000:]
    assert "[log_id=" in error_lines[0] and "tiktok_connect_account" in error_lines[0]
    assert f"TikTok request POST /v2/oauth/token/ account={bad} grant_type=refresh_token -> HTTP" in out
    assert "Bearer" not in out and "act." not in out and "rft." not in out
    # The provider's own frames (client, tenacity, auth) are not chained under the failure. Airflow
    # 3.3's task runner still logs "Task failed with exception" with its traceback (log.exception):
    # 6 frames of its own and 3 of ours, under the clean line above.
    assert out.index(clean) < out.index("Task failed with exception")
    assert "During handling of the above exception" not in out
    assert "The above exception was the direct cause" not in out

    # What GET /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links?map_index=0 does:
    # the serialized task's extra_links, each read back with get_extra_links(ti, name).
    with create_session() as session:
        dag = SerializedDagModel.get_dag(run.dag_id, session=session)
        task = dag.get_task("snapshot_profile")
        ti = (
            session.query(TaskInstance)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id="snapshot_profile", map_index=0)
            .one()
        )
        links = {link: task.get_extra_links(ti, link) for link in task.extra_links}
    assert links == {
        "Account": f"/tiktok-accounts/#account-{bad}",
        "Runbook": "/dags/tiktok_profile_snapshot/tasks/snapshot_profile",
        "TikTok profile": links["TikTok profile"],
    }
    assert not links["TikTok profile"], "no profile was fetched, so no profile link"


def test_accounts_param_takes_a_display_name_and_a_name_nothing_matches_fails_listing_it(
    sim, run_dag, connect_via_dag, clean_warehouse
) -> None:
    wanted = connect_via_dag(videos=1)
    other = connect_via_dag(videos=1)
    [(name,)] = table(clean_warehouse, "SELECT display_name FROM tiktok.accounts WHERE open_id = :o", o=wanted)
    run = run_dag("tiktok_profile_snapshot", accounts=[name.upper()])
    assert str(run.state) == "success", states(run)
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        task = SerializedDagModel.get_dag(run.dag_id, session=session).get_task("snapshot_profile")
        ti = (
            session.query(TaskInstance)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id="snapshot_profile", map_index=0)
            .one()
        )
        profile_link = task.get_extra_links(ti, "TikTok profile")
    # The warehouse does not keep profile_deep_link: the link is what this run's user/info answered.
    assert profile_link.startswith("https://vm.tiktok.com/") and len(profile_link) > len("https://vm.tiktok.com/")
    assert [r[0] for r in table(clean_warehouse, "SELECT open_id FROM tiktok.profile_snapshots")] == [wanted]
    assert other != wanted
    run = run_dag("tiktok_profile_snapshot", accounts=["Nobody At All"])
    assert states(run)[("select_accounts", -1)] == "failed"


def test_above_the_threshold_accounts_run_in_batches_and_a_clear_redoes_only_the_failed_one(
    sim, dags, run_dag, connect_via_dag, clean_warehouse, monkeypatch
) -> None:
    import json

    from receivers import http_receiver

    from tiktok_provider.errors import account_label

    monkeypatch.setenv("AIRFLOW__TIKTOK__BATCH_ACCOUNTS_ABOVE", "2")
    monkeypatch.setenv("AIRFLOW__TIKTOK__ACCOUNTS_PER_BATCH", "3")
    ids = [connect_via_dag(videos=1) for _ in range(5)]
    sim.admin.set_faults("user_info", queue=[("pass", 2), ("missing_data", 1)])  # the third account's answer
    sim.admin.reset_stats()
    with http_receiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url}))
        run = run_dag("tiktok_profile_snapshot")
        messages = receiver.json()
    mapped = {k: v for k, v in states(run).items() if k[0] == "snapshot_profile"}
    assert sorted(mapped.values()) == ["failed", "success"], "5 accounts, 3 a batch: two batch tasks"
    stored = {r[0] for r in table(clean_warehouse, "SELECT open_id FROM tiktok.profile_snapshots")}
    assert len(stored) == 4, "the failure stopped no other account, in its batch or the other"
    [failed] = set(ids) - stored
    [name] = [
        r[0] for r in table(clean_warehouse, "SELECT display_name FROM tiktok.accounts WHERE open_id = :o", o=failed)
    ]
    failures = [m for m in messages if failed in json.dumps(m)]
    assert failures, messages
    named = account_label(failed, name)  # as every failure names an account: one line, with its open_id
    assert any("1 of 3 accounts failed" in m["facts"]["Message"] and named in m["facts"]["Message"] for m in failures)
    assert sim.admin.stats()["endpoints"]["user_info"]["requests"] == 5

    # Clearing: the same run again (dag.test replaces a run of the same logical date).
    again = dags.rerun(run)
    assert str(again.state) == "success", states(again)
    assert sim.admin.stats()["endpoints"]["user_info"]["requests"] == 6, "only the failed account was asked again"
    assert {r[0] for r in table(clean_warehouse, "SELECT open_id FROM tiktok.profile_snapshots")} == set(ids)
    summaries = xcom(again, "snapshot_profile")
    assert sorted((s["batch_done"], s["batch_done_earlier"]) for s in summaries) == [(0, 2), (1, 2)]


def test_a_cleared_batch_of_a_second_run_the_same_day_skips_the_accounts_it_found_unchanged(
    sim, dags, run_dag, connect_via_dag, clean_warehouse, monkeypatch
) -> None:
    """An unchanged snapshot keeps its first captured_at; the clear must still see it was checked in this run."""
    monkeypatch.setenv("AIRFLOW__TIKTOK__BATCH_ACCOUNTS_ABOVE", "1")
    monkeypatch.setenv("AIRFLOW__TIKTOK__ACCOUNTS_PER_BATCH", "3")
    ids = [connect_via_dag(videos=1) for _ in range(3)]
    sim.admin.freeze_clock()  # the same numbers all day: the second run changes no row
    try:
        assert str(run_dag("tiktok_profile_snapshot").state) == "success"
        first = table(clean_warehouse, "SELECT open_id, captured_at FROM tiktok.profile_snapshots ORDER BY 1")
        sim.admin.set_faults("user_info", queue=[("pass", 2), ("missing_data", 1)])  # the third account's answer
        run = run_dag("tiktok_profile_snapshot")
        assert states(run)[("snapshot_profile", 0)] == "failed"
        sim.admin.clear_faults()
        sim.admin.reset_stats()

        again = dags.rerun(run)
    finally:
        sim.admin.unfreeze_clock()
    assert str(again.state) == "success", states(again)
    assert sim.admin.stats()["endpoints"]["user_info"]["requests"] == 1, "only the failed account was asked again"
    [summary] = xcom(again, "snapshot_profile")
    assert (summary["batch_done"], summary["batch_done_earlier"]) == (1, 2), summary
    # Nothing changed, so no row was rewritten: each keeps the captured_at of the day's first run.
    after = table(clean_warehouse, "SELECT open_id, captured_at FROM tiktok.profile_snapshots ORDER BY 1")
    assert after == first and {r[0] for r in after} == set(ids)


def batch_labels(run: Any, task_id: str) -> dict[int, str | None]:
    """Return ``{map_index: label}`` of a mapped task in a DagRun: what the grid shows for each."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        found = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id)
        return {ti.map_index: ti.rendered_map_index for ti in found}


def test_a_failed_batch_keeps_its_label_and_names_each_failed_account_with_log_id_and_next_step(
    sim, run_dag, connect_via_dag, clean_warehouse, monkeypatch
) -> None:
    import json

    from receivers import http_receiver

    monkeypatch.setenv("AIRFLOW__TIKTOK__BATCH_ACCOUNTS_ABOVE", "1")
    monkeypatch.setenv("AIRFLOW__TIKTOK__ACCOUNTS_PER_BATCH", "2")
    ids = [connect_via_dag(videos=1) for _ in range(2)]
    sim.admin.fail_next("user_info", "missing_data", 2)  # both accounts' answers break the contract
    sim.admin.reset_stats()
    with http_receiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url}))
        run = run_dag("tiktok_profile_snapshot")
        messages = receiver.json()
    assert states(run)[("snapshot_profile", 0)] == "failed"
    assert batch_labels(run, "snapshot_profile") == {0: "accounts 1-2 of 2"}, "the grid still says which batch"
    asked = {r["open_id"]: r["log_id"] for r in sim.admin.requests(endpoint="user_info")}
    assert sorted(asked) == sorted(ids)
    [alert] = [m for m in messages if m["kind"] == "task_failed" and m["facts"]["Task"].startswith("snapshot_profile")]
    assert alert["facts"]["Account"] == "accounts 1-2 of 2"
    message = alert["facts"]["Message"]
    assert message.startswith("2 of 2 accounts failed")
    for open_id, log_id in asked.items():
        # each failed account: who it is, TikTok's log_id for support, and what to do next
        assert open_id in message and f"[log_id={log_id}]" in message, message
    assert message.count("Report it to TikTok support with the log_id") == 2, message


def test_a_batch_clear_redoes_an_account_whose_stale_sync_was_finished_before_its_new_listing_failed(
    sim, dags, run_dag, connect_via_dag, clean_warehouse, monkeypatch
) -> None:
    """A stale sync finished by a run is not that run's sync: clearing the run must list the account again."""
    monkeypatch.setenv("AIRFLOW__TIKTOK__BATCH_ACCOUNTS_ABOVE", "1")
    monkeypatch.setenv("AIRFLOW__TIKTOK__ACCOUNTS_PER_BATCH", "2")
    stale, fine = connect_via_dag(videos=3), connect_via_dag(videos=3)
    whole = {"mode": "whole_history"}
    assert str(run_dag("tiktok_video_backfill", **whole).state) == "success"
    # The next run: the listing of `stale` misses a deleted video, and video/query never answers about it.
    sim.admin.delete_video(sim.admin.video_ids(stale)[0])
    sim.admin.set_faults("video_query", probabilities={"missing_data": 1.0})
    assert str(run_dag("tiktok_video_backfill", **whole).state) == "failed"
    assert table(
        clean_warehouse,
        "SELECT open_id FROM tiktok.sync_state WHERE finished_at IS NULL AND listed_at IS NOT NULL",
    ) == [(stale,)]
    # The run after: it finishes the stale sync (its suspect handed on), then both new listings fail.
    sim.admin.clear_faults()
    sim.admin.set_faults("video_list", probabilities={"missing_data": 1.0})
    run = run_dag("tiktok_video_backfill", **whole)
    assert str(run.state) == "failed"
    sim.admin.clear_faults()
    sim.admin.reset_stats()

    # Clearing that run: neither account was listed in it, so both are listed now.
    again = dags.rerun(run, **whole)
    assert str(again.state) == "success", states(again)
    [summary] = xcom(again, "sync_videos")
    assert (summary["batch_done"], summary["batch_done_earlier"]) == (2, 0), summary
    listed = {r["open_id"] for r in sim.admin.requests(endpoint="video_list")}
    assert listed == {stale, fine}


def test_batches_publish_the_same_asset_extras_and_run_summary_as_one_task_per_account(
    sim, run_dag, connect_via_dag, clean_warehouse, monkeypatch
) -> None:
    """A DAG scheduled on the Assets reads accounts and rows from the event: batching must not change them."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from tiktok_pipeline.assets import PROFILE_SNAPSHOTS

    monkeypatch.setenv("AIRFLOW__TIKTOK__BATCH_ACCOUNTS_ABOVE", "2")
    monkeypatch.setenv("AIRFLOW__TIKTOK__ACCOUNTS_PER_BATCH", "2")
    for _ in range(3):
        connect_via_dag(videos=1)
    run = run_dag("tiktok_profile_snapshot")
    assert str(run.state) == "success", states(run)
    assert len(xcom(run, "snapshot_profile")) == 2, "3 accounts, 2 a batch: two batch tasks"
    with create_session() as session:
        asset_id = session.scalar(select(AssetModel.id).where(AssetModel.uri == PROFILE_SNAPSHOTS.uri))
        event = session.scalars(
            select(AssetEvent).where(AssetEvent.asset_id == asset_id).order_by(AssetEvent.id.desc())
        ).first()
    assert (event.extra["accounts"], event.extra["rows"]) == (3, 3), event.extra
    [summary] = xcom(run, "summarize")
    assert summary["accounts"] == 3, summary


def test_an_outage_sends_the_first_failures_one_by_one_then_one_digest(
    sim, dags, run_dag, connect_account, clean_warehouse, monkeypatch
) -> None:
    """Every account failing (TikTok answering nonsense) is not a storm: 1 message, then one digest of the rest."""
    import json
    from collections import Counter
    from urllib.parse import quote

    from receivers import http_receiver

    from tiktok_provider.notifications import tiktok as notifications

    monkeypatch.setenv("AIRFLOW__TIKTOK__ALERTS_PER_RUN", "1")
    ids = [connect_account(videos=1) for _ in range(4)]
    sim.admin.set_faults("user_info", probabilities={"missing_data": 1.0})
    with http_receiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url}))
        run = run_dag("tiktok_profile_snapshot")
        messages = receiver.json()
        assert Counter(m["kind"] for m in messages) == {"task_failed": 1, "run_failures": 1}, messages
        assert states(run)[("alert_digest", -1)] == "success"
        assert sorted(s for k, s in states(run).items() if k[0] == "snapshot_profile") == ["failed"] * 4
        [digest] = [m for m in messages if m["kind"] == "run_failures"]
        assert digest["facts"]["In this digest"] == "3" and digest["facts"]["Sent one by one before"] == "1"
        assert "(x3)" in digest["facts"]["By error"]
        assert digest["url"].endswith(f"/dags/tiktok_profile_snapshot/runs/{quote(run.run_id, safe='')}")
        # Every account is named once: in its own message or in the digest.
        where = [m["facts"].get("open_id", "") + m["facts"].get("Accounts", "") for m in messages]
        assert Counter(i for text_ in where for i in ids if i in text_) == dict.fromkeys(ids, 1), messages
        assert "act." not in json.dumps(messages) and "rft." not in json.dumps(messages)
        rows = table(clean_warehouse, "SELECT kind, folded, sent_at IS NOT NULL FROM tiktok.alert_outbox ORDER BY 1, 2")
        assert rows == [("task_failed", False, True)] + [("task_failed", True, True)] * 3

        # Clearing the whole run clears the digest too: the failures again reach on-call, each exactly once.
        monkeypatch.setattr(notifications, "_SENT", set())  # dag.test runs every task in this one process
        receiver.requests.clear()
        again = dags.rerun(run)
        messages = receiver.json()
    assert str(again.state) == "failed"
    single = [m for m in messages if m["kind"] == "task_failed"]
    [digest] = [m for m in messages if m["kind"] == "run_failures"]
    assert len(single) <= 1 and len(single) + int(digest["facts"]["In this digest"]) == 4, messages
