"""Parse-only: the daily DAGs carry their Deadline Alert, and every account task alerts on-call when it fails."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
ACCOUNT_TASKS = {
    "tiktok_profile_snapshot": "snapshot_profile",
    "tiktok_video_backfill": "sync_videos",
    "tiktok_cover_refresh": "refresh_covers",
}


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS_DIR))


@pytest.fixture(scope="module")
def production_dagbag() -> DagBag:
    """The DAGs as the scheduler parses them: the local test settings turn deadlines off (dag.test() bug)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("AIRFLOW__TIKTOK_ALERTS__DEADLINE_HOURS", raising=False)
        return DagBag(dag_folder=str(DAGS_DIR))


@pytest.mark.parametrize("dag_id", ["tiktok_profile_snapshot", "tiktok_video_backfill"])
def test_daily_dags_alert_when_not_finished_six_hours_after_queued(production_dagbag: DagBag, dag_id: str) -> None:
    from airflow.sdk import AsyncCallback, DeadlineReference
    from airflow.sdk._shared.module_loading import import_string

    [deadline] = production_dagbag.dags[dag_id].deadline
    assert deadline.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert deadline.interval == timedelta(hours=6)
    assert isinstance(deadline.callback, AsyncCallback)
    assert deadline.callback.kwargs == {"hours": 6.0}
    assert callable(import_string(deadline.callback.path))  # what the triggerer imports


def test_deadline_hours_come_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from tiktok_pipeline.deadlines import daily_run_deadline

    monkeypatch.setenv("AIRFLOW__TIKTOK_ALERTS__DEADLINE_HOURS", "2.5")
    assert daily_run_deadline().interval == timedelta(hours=2.5)
    monkeypatch.setenv("AIRFLOW__TIKTOK_ALERTS__DEADLINE_HOURS", "off")
    assert daily_run_deadline() is None
    monkeypatch.setenv("AIRFLOW__TIKTOK_ALERTS__DEADLINE_HOURS", "soon")
    with pytest.raises(ValueError, match="deadline_hours"):
        daily_run_deadline()


@pytest.mark.parametrize("dag_id", sorted(ACCOUNT_TASKS))
def test_account_tasks_alert_on_failure(dagbag: DagBag, dag_id: str) -> None:
    from tiktok_provider.notifications.tiktok import TikTokAlertNotifier

    task = dagbag.dags[dag_id].get_task(ACCOUNT_TASKS[dag_id])
    callbacks = task.partial_kwargs["on_failure_callback"]
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    assert any(isinstance(c, TikTokAlertNotifier) for c in callbacks)
