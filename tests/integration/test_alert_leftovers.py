"""Failures folded into a digest that never ran (the run was marked failed) still reach on-call."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dag_support import fold_failure, states, xcom
from dag_support import rows as table
from receivers import http_receiver

from tiktok_pipeline.alert_digest import send_leftovers

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture
def run_dag(tiktok_connections: Any, clean_warehouse: Any) -> Any:
    from tiktok_tools.dagrun import Dags

    return Dags(DAGS_DIR).run


def fold(engine: Any, dag_id: str, run_id: str, account: str, *, ago: timedelta) -> None:
    fold_failure(engine, dag_id, run_id, account, created_at=NOW - ago)


def test_only_ended_runs_old_enough_are_sent_once_and_old_rows_pruned(clean_warehouse: Any, monkeypatch) -> None:
    fold(clean_warehouse, "tiktok_video_backfill", "marked_failed", "open-a", ago=timedelta(hours=2))
    fold(clean_warehouse, "tiktok_video_backfill", "marked_failed", "open-b", ago=timedelta(hours=2))
    fold(clean_warehouse, "tiktok_video_backfill", "still_running", "open-c", ago=timedelta(hours=3))
    fold(clean_warehouse, "tiktok_video_backfill", "just_now", "open-d", ago=timedelta(minutes=5))
    fold(clean_warehouse, "tiktok_video_backfill", "last_month", "open-e", ago=timedelta(days=40))
    asked: list[str] = []

    def over(dag_id: str, run_id: str) -> bool:
        asked.append(run_id)
        return run_id != "still_running"

    with http_receiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url}))
        first = send_leftovers(clean_warehouse, run_is_over=over, now=NOW)
        second = send_leftovers(clean_warehouse, run_is_over=over, now=NOW)
        messages = receiver.json()
    assert first == {"leftover_runs": 1, "leftover_digests_sent": 1} and second["leftover_digests_sent"] == 0
    [message] = messages
    assert "were never sent" in message["title"] and "marked_failed" in message["title"]
    assert message["facts"]["In this digest"] == "2" and "open-a" in message["facts"]["Accounts"]
    assert {"marked_failed", "still_running"} <= set(asked) and "just_now" not in asked  # too young to ask
    unsent = table(
        clean_warehouse,
        "SELECT run_id FROM tiktok.alert_outbox WHERE kind = 'task_failed' AND sent_at IS NULL ORDER BY 1",
    )
    assert unsent == [("just_now",), ("still_running",)]  # the running run's own digest sends it; last month's is gone


def test_a_digest_of_another_run_sends_the_failures_of_a_run_that_is_gone(
    run_dag, connect_account, clean_warehouse, monkeypatch
) -> None:
    connect_account(videos=1)
    fold(clean_warehouse, "tiktok_profile_snapshot", "manual__deleted_run", "open-x", ago=timedelta(hours=2))
    with http_receiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url}))
        run = run_dag("tiktok_profile_snapshot")
        messages = receiver.json()
    assert str(run.state) == "success", states(run)
    [message] = messages  # once, though alert_digest and check_consent both look
    assert "manual__deleted_run" in message["title"] and "open-x" in message["facts"]["Accounts"]
    [digest] = xcom(run, "alert_digest")
    [check] = xcom(run, "check_consent")
    assert digest["leftover_digests_sent"] + check.get("leftover_digests_sent", 0) == 1
