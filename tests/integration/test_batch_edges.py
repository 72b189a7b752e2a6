"""Batch tasks across tries and under a timeout, through Airflow's dag.test(), the simulator and the real Postgres.

What on-call reads after a batch is cleared or retried (the summary, the Asset event) speaks for the
whole run, each account counted once; and a whole-history batch gives each account the time limit
its own task would have had, so one huge account does not fail the other 49.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from dag_support import rows as table
from dag_support import states, tries, xcom

pytestmark = pytest.mark.integration

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture
def dags() -> Any:
    """The DAGs, retried at once: a retry is the batch task's next try in the same run.

    (Not ``Dags.rerun``: dag.test() deletes a run it replaces, and with it the run's task state store,
    which Airflow keeps when a task is retried or cleared.)
    """
    from tiktok_tools.dagrun import Dags

    return Dags(DAGS_DIR, instant_retries=True)


@pytest.fixture
def run_dag(dags: Any, tiktok_connections: Any, clean_warehouse: Any) -> Callable[..., Any]:
    return dags.run


@pytest.fixture
def connect_via_dag(sim: Any, run_dag: Any) -> Callable[..., str]:
    from tiktok_tools.simaccounts import connect_conf

    def connect(videos: int = 1) -> str:
        account = sim.admin.create_account(videos=videos)
        run = run_dag("tiktok_connect_account", **connect_conf(sim.admin, account["open_id"]))
        assert str(run.state) == "success", states(run)
        return account["open_id"]

    return connect


@pytest.fixture
def alerts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """On-call's messages: the tiktok_alerts connection points at a local receiver."""
    from receivers import http_receiver

    with http_receiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url}))
        yield receiver


def latest_event_extra(asset: Any) -> dict[str, Any]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        asset_id = session.scalar(select(AssetModel.id).where(AssetModel.uri == asset.uri))
        event = session.scalars(
            select(AssetEvent).where(AssetEvent.asset_id == asset_id).order_by(AssetEvent.id.desc())
        ).first()
        return dict(event.extra)


def test_a_retried_batch_reports_the_whole_run_each_account_once(
    sim, dags, run_dag, connect_via_dag, clean_warehouse, monkeypatch
) -> None:
    """Accounts done by the first try are "done earlier", not "skipped", and their rows still count, once."""
    from tiktok_pipeline.assets import PROFILE_SNAPSHOTS

    monkeypatch.setenv("AIRFLOW__TIKTOK__BATCH_ACCOUNTS_ABOVE", "1")
    monkeypatch.setenv("AIRFLOW__TIKTOK__ACCOUNTS_PER_BATCH", "3")
    ids = [connect_via_dag() for _ in range(3)]
    # The third account's answers are 500s until the hook gives up (6 attempts): the task is retried.
    sim.admin.set_faults("user_info", queue=[("pass", 2), ("internal_error", 6)])
    sim.admin.reset_stats()

    run = run_dag("tiktok_profile_snapshot")

    assert str(run.state) == "success", states(run)
    assert tries(run)[("snapshot_profile", 0)] == 2
    assert sim.admin.stats()["endpoints"]["user_info"]["requests"] == 2 + 6 + 1, "the retry asked only the third"
    assert {r[0] for r in table(clean_warehouse, "SELECT open_id FROM tiktok.profile_snapshots")} == set(ids)
    # The Asset event says what the run wrote: three snapshots, one per account, not the last try's one.
    extra = latest_event_extra(PROFILE_SNAPSHOTS)
    assert (extra["accounts"], extra["rows"]) == (3, 3), extra
    [summary] = xcom(run, "snapshot_profile")
    assert (summary["batch_accounts"], summary["batch_done"], summary["batch_done_earlier"]) == (3, 1, 2), summary
    assert summary["batch_done_earlier_unrecorded"] == 0, summary
    assert summary["written"] == 3, "each account's snapshot, counted once, whichever try wrote it"
    assert summary["this_try"]["written"] == 1, summary
    assert summary["api_calls"] == {"/v2/user/info/": 3}, "the calls of each account's try that stored it"
    [run_summary] = xcom(run, "summarize")
    assert (run_summary["accounts"], run_summary["written"], run_summary["batch_done_earlier"]) == (3, 3, 2)


def test_a_whole_history_batch_gives_each_account_its_own_time_limit(
    sim, dags, run_dag, connect_via_dag, clean_warehouse, alerts, monkeypatch
) -> None:
    """One account too big for the limit is stopped and named; the other account of the batch is synced."""
    monkeypatch.setenv("AIRFLOW__TIKTOK__BATCH_ACCOUNTS_ABOVE", "1")
    monkeypatch.setenv("AIRFLOW__TIKTOK__ACCOUNTS_PER_BATCH", "2")
    big, small = sorted(connect_via_dag() for _ in range(2))  # the batch takes its accounts by open_id
    sim.admin.add_videos(big, 199)  # 10 pages of 20
    task = dags["tiktok_video_backfill"].get_task("sync_videos")
    task.execution_timeout, task.retries = timedelta(seconds=4), 0
    sim.admin.set_faults("video_list", probabilities={"slow": 1.0}, slow_seconds=1.0)  # every page takes 1 s

    run = run_dag("tiktok_video_backfill", mode="whole_history")

    sim.admin.clear_faults()
    assert states(run)[("sync_videos", 0)] == "failed"
    finished = dict(table(clean_warehouse, "SELECT open_id, finished_at IS NOT NULL FROM tiktok.sync_state"))
    assert finished == {big: False, small: True}, "the small account was synced although the big one ran over"
    [(pages,)] = table(clean_warehouse, "SELECT pages FROM tiktok.sync_state WHERE open_id = :o", o=big)
    assert 0 < pages < 10, "the big one stopped part way, its pages so far committed: the resume point"
    [alert] = [m for m in alerts.json() if m["kind"] == "task_failed" and m["facts"]["Task"].startswith("sync_videos")]
    message = alert["facts"]["Message"]
    assert message.startswith("1 of 2 accounts failed (1 done in this try"), message
    assert f"open_id {big}): AccountTimeLimitReached: timed out after 0:00:04" in message, message
    assert "raise execution_timeout" in message and small not in message


def test_a_whole_history_batch_retried_after_a_time_limit_resumes_and_counts_each_account_once(
    sim, dags, run_dag, connect_via_dag, clean_warehouse, monkeypatch
) -> None:
    monkeypatch.setenv("AIRFLOW__TIKTOK__BATCH_ACCOUNTS_ABOVE", "1")
    monkeypatch.setenv("AIRFLOW__TIKTOK__ACCOUNTS_PER_BATCH", "2")
    big, small = sorted(connect_via_dag() for _ in range(2))
    sim.admin.add_videos(big, 199)
    task = dags["tiktok_video_backfill"].get_task("sync_videos")
    task.execution_timeout, task.retries = timedelta(seconds=4), 1
    # The first 6 pages asked for take 1 s each: the big account runs over its 4 s in the first try only.
    sim.admin.set_faults("video_list", queue=[("slow", 6)], slow_seconds=1.0)
    sim.admin.reset_stats()

    run = run_dag("tiktok_video_backfill", mode="whole_history")

    assert str(run.state) == "success", states(run)
    assert tries(run)[("sync_videos", 0)] == 2
    listed = [r["open_id"] for r in sim.admin.requests(endpoint="video_list")]
    assert listed.count(small) == 1, "the retry did not sync the small account again"
    assert listed.count(big) <= 10 + 8, "the retry resumed the big one (at most 8 pages asked twice)"
    [summary] = xcom(run, "sync_videos")
    assert (summary["batch_done"], summary["batch_done_earlier"]) == (1, 1), summary
    assert summary["videos_seen"] == 201, "both accounts' syncs, each once"
    [(videos,)] = table(clean_warehouse, "SELECT count(*) FROM tiktok.videos")
    assert videos == 201
