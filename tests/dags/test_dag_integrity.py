"""Parse-only checks: every DAG imports, has tags, an owner, retries and a runbook on every task.

And every connection and pool name comes from one place (``tiktok_pipeline.common``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
EXPECTED = {
    "tiktok_connect_account",
    "tiktok_profile_snapshot",
    "tiktok_video_backfill",
    "tiktok_cover_refresh",
    "tiktok_marts_refresh",
}


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


@pytest.mark.parametrize("dag_id", sorted(EXPECTED - {"tiktok_connect_account", "tiktok_marts_refresh"}))
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


def _names(dagbag: DagBag) -> dict[str, set]:
    """Every TikTok connection, check connection and pool the tasks of the DAGs name."""
    from airflow.providers.common.sql.operators.sql import SQLCheckOperator

    names: dict[str, set] = {"tiktok": set(), "checks": set(), "pools": set()}
    for dag_id in EXPECTED - {"tiktok_connect_account"}:
        for task in dagbag.dags[dag_id].tasks:
            if task.task_id in {"snapshot_profile", "sync_videos", "refresh_covers"}:
                names["tiktok"].add(task.partial_kwargs["tiktok_conn_id"])
                names["pools"].add(task.pool)
            elif task.task_type == SQLCheckOperator.__name__:
                names["checks"].add(task.conn_id)
    return names


def test_the_checks_read_the_warehouse_the_tiktok_connection_names(dagbag: DagBag) -> None:
    from tiktok_pipeline.common import API_POOL, TIKTOK_CONN_ID, WarehouseConnId

    assert _names(dagbag) == {
        "tiktok": {TIKTOK_CONN_ID},
        "checks": {WarehouseConnId(TIKTOK_CONN_ID)},
        "pools": {API_POOL},
    }


def test_changing_tiktok_conn_id_in_common_moves_every_task(monkeypatch: pytest.MonkeyPatch) -> None:
    from tiktok_pipeline import common

    monkeypatch.setattr(common, "TIKTOK_CONN_ID", "tiktok_elsewhere")
    moved = DagBag(dag_folder=str(DAGS_DIR))
    assert moved.import_errors == {}
    names = _names(moved)
    assert names["tiktok"] == {"tiktok_elsewhere"}
    assert names["checks"] == {common.WarehouseConnId("tiktok_elsewhere")}


def test_the_defaults_name_the_same_connections_and_pool_everywhere() -> None:
    from tiktok_ops import bootstrap
    from tiktok_pipeline import common, names
    from tiktok_provider.connection import TikTokConnectionConfig
    from tiktok_provider.hooks.tiktok import TikTokDisplayHook
    from tiktok_warehouse import db

    assert TikTokDisplayHook.default_conn_name == common.TIKTOK_CONN_ID == names.TIKTOK_CONN_ID
    assert TikTokConnectionConfig.warehouse_conn_id == db.DEFAULT_CONN_ID == names.WAREHOUSE_CONN_ID
    assert bootstrap.API_POOL == common.API_POOL


def test_marts_refresh_is_scheduled_on_the_tiktok_assets(dagbag: DagBag) -> None:
    from tiktok_pipeline.assets import PROFILE_SNAPSHOTS, VIDEO_SNAPSHOTS, VIDEOS

    dag = dagbag.dags["tiktok_marts_refresh"]
    wanted = {PROFILE_SNAPSHOTS.uri, VIDEOS.uri, VIDEO_SNAPSHOTS.uri}
    assert {a.uri for a in dag.timetable.asset_condition.objects} == wanted
    assert PROFILE_SNAPSHOTS.uri == "postgres://tiktok-warehouse:5432/tiktok/tiktok/profile_snapshots"


@pytest.mark.parametrize(
    ("dag_id", "task_id"),
    [
        ("tiktok_profile_snapshot", "snapshot_profile"),
        ("tiktok_video_backfill", "sync_videos"),
        ("tiktok_cover_refresh", "refresh_covers"),
    ],
)
def test_the_serialized_dag_the_api_reads_names_the_links(dagbag: DagBag, dag_id: str, task_id: str) -> None:
    """The API's /links endpoint asks the deserialized task for ``extra_links``; a mapped task must keep them."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = dagbag.dags[dag_id]
    task = DagSerialization.from_dict(DagSerialization.to_dict(dag)).get_task(task_id)
    expected = ["Account", "Runbook", "TikTok profile"] if task_id == "snapshot_profile" else ["Account", "Runbook"]
    assert sorted(task.extra_links) == expected
