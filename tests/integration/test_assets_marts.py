"""Assets end to end: a TikTok DAG's event queues tiktok_marts_refresh, which refreshes a real materialized view."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from adhoc_dags import register
from dag_support import states
from sqlalchemy import text

MV = "tiktok.test_marts_profile_totals"


@pytest.fixture
def materialized_view(clean_warehouse: Any) -> Any:
    with clean_warehouse.begin() as conn:
        conn.execute(text(f"DROP MATERIALIZED VIEW IF EXISTS {MV}"))
        conn.execute(
            text(
                f"CREATE MATERIALIZED VIEW {MV} AS SELECT open_id, max(follower_count) AS followers "
                "FROM tiktok.profile_snapshots GROUP BY open_id"
            )
        )
        conn.execute(text(f"CREATE UNIQUE INDEX ON {MV} (open_id)"))
    yield clean_warehouse
    with clean_warehouse.begin() as conn:
        conn.execute(text(f"DROP MATERIALIZED VIEW IF EXISTS {MV}"))


def _add_snapshot(engine: Any, open_id: str, followers: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tiktok.accounts (open_id, connected_at, updated_at, access_token_enc, refresh_token_enc,"
                " access_expires_at, refresh_expires_at) VALUES (:o, now(), now(), 'x', 'x', now(), now())"
            ),
            {"o": open_id},
        )
        conn.execute(
            text(
                "INSERT INTO tiktok.profile_snapshots (open_id, snapshot_date, captured_at, follower_count) "
                "VALUES (:o, CURRENT_DATE, now(), :f)"
            ),
            {"o": open_id, "f": followers},
        )


def test_marts_refresh_refreshes_the_configured_view(
    tiktok_connections: Any, materialized_view: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dags.tiktok_marts_refresh import dag_object

    _add_snapshot(materialized_view, "acct-1", 120)
    with materialized_view.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {MV}")).scalar() == 0  # not refreshed yet

    monkeypatch.setenv("AIRFLOW__TIKTOK_MARTS__MATERIALIZED_VIEWS", MV)
    run = dag_object.test()
    assert states(run) == {("refresh_materialized_views", -1): "success"}
    with materialized_view.connect() as conn:
        assert conn.execute(text(f"SELECT open_id, followers FROM {MV}")).all() == [("acct-1", 120)]


def test_marts_refresh_with_no_views_configured_is_a_no_op(tiktok_connections: Any, test_databases: Any) -> None:
    from dags.tiktok_marts_refresh import dag_object

    run = dag_object.test()
    assert states(run) == {("refresh_materialized_views", -1): "success"}


def test_a_publish_task_event_queues_the_marts_dag_with_its_extras(test_databases: Any) -> None:
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.sdk import DAG, task
    from airflow.utils.session import create_session
    from sqlalchemy import delete, select

    from tiktok_pipeline.assets import PROFILE_SNAPSHOTS, publish_task

    with DAG("assets_publish_test", start_date=datetime(2026, 1, 1), schedule=None) as dag:

        @task
        def results() -> list[dict]:
            return [{"written": True, "api_calls": {"user_info": 1}}, {"written": False}, {"written": True}, "no"]

        publish_task([PROFILE_SNAPSHOTS], results())

    with create_session() as session:
        session.execute(delete(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == "tiktok_marts_refresh"))
    run = register(dag).test()
    assert states(run)[("publish_assets", -1)] == "success"
    with create_session() as session:
        asset_id = session.scalar(select(AssetModel.id).where(AssetModel.uri == PROFILE_SNAPSHOTS.uri))
        queued = session.scalars(
            select(AssetDagRunQueue.asset_id).where(AssetDagRunQueue.target_dag_id == "tiktok_marts_refresh")
        ).all()
        event = session.scalars(
            select(AssetEvent).where(AssetEvent.asset_id == asset_id).order_by(AssetEvent.id.desc())
        ).first()
        extra = dict(event.extra)
    assert queued == [asset_id]
    assert extra == {"accounts": 3, "rows": 2, "snapshot_date": datetime.now(UTC).date().isoformat()}
