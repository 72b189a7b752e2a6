"""Parse-only checks: every DAG imports, has tags, an owner, retries and a runbook on every task."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
EXPECTED = {"tiktok_connect_account", "tiktok_profile_snapshot", "tiktok_video_backfill", "tiktok_cover_refresh"}


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}


def test_the_four_dags_are_there(dagbag: DagBag) -> None:
    assert set(dagbag.dag_ids) == EXPECTED


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_dag_conventions(dagbag: DagBag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert dag.tags, f"{dag_id} has no tags"
    assert dag.doc_md, f"{dag_id} has no doc_md"
    assert dag.catchup is False
    for task in dag.tasks:
        assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"
        assert task.retries >= 1, f"{dag_id}.{task.task_id} has retries={task.retries}"
        assert task.doc_md, f"{dag_id}.{task.task_id} has no runbook (doc_md)"


@pytest.mark.parametrize("dag_id", sorted(EXPECTED - {"tiktok_connect_account"}))
def test_api_tasks_retry_and_use_the_pool(dagbag: DagBag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    api_tasks = [t for t in dag.tasks if t.task_id in {"snapshot_profile", "sync_videos", "refresh_covers"}]
    assert len(api_tasks) == 1
    assert api_tasks[0].retries >= 3
    assert api_tasks[0].retry_exponential_backoff
    assert api_tasks[0].pool == "tiktok_api"


def test_dag_default_retries_at_least_two(dagbag: DagBag) -> None:
    for dag_id in EXPECTED:
        assert dagbag.dags[dag_id].default_args["retries"] >= 2


def test_no_value_select_accounts_hands_a_mapped_task_is_a_template_field(dagbag: DagBag) -> None:
    """expand_kwargs() values taken from XCom are rendered as Jinja in Airflow 3.3 when templated."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    from tiktok_pipeline.common import ACCOUNT_KWARGS

    mapped = [t for dag in dagbag.dags.values() for t in dag.tasks if isinstance(t, MappedOperator)]
    assert len(mapped) == 3
    for task in mapped:
        assert set(ACCOUNT_KWARGS).isdisjoint(task.template_fields), f"{task.dag_id}.{task.task_id}"
