"""Assets end to end: a TikTok DAG's event queues tiktok_marts_refresh, which refreshes a real materialized view."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adhoc_dags import register
from dag_support import states
from sqlalchemy import text


def _add_account_with_a_video(engine: Any, open_id: str, views: int, likes: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tiktok.accounts (open_id, username, connected_at, updated_at, access_token_enc,"
                " refresh_token_enc, access_expires_at, refresh_expires_at)"
                " VALUES (:o, :o, now(), now(), 'x', 'x', now(), now())"
            ),
            {"o": open_id},
        )
        conn.execute(
            text(
                "INSERT INTO tiktok.videos (id, open_id, create_time, view_count, like_count, comment_count,"
                " share_count, first_seen_at, last_seen_at) VALUES ('v-' || :o, :o, now(), :v, :l, 0, 0, now(), now())"
            ),
            {"o": open_id, "v": views, "l": likes},
        )


def test_marts_refresh_refreshes_the_warehouse_marts(tiktok_connections: Any, clean_warehouse: Any) -> None:
    from dags.tiktok_marts_refresh import dag_object

    with clean_warehouse.begin() as conn:
        conn.execute(text("SELECT tiktok.refresh_marts()"))  # empty before the data lands
    _add_account_with_a_video(clean_warehouse, "acct-1", 1000, 50)
    with clean_warehouse.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tiktok.mart_account_engagement")).scalar() == 0

    run = dag_object.test()
    assert states(run) == {("refresh_materialized_views", -1): "success"}
    with clean_warehouse.connect() as conn:
        rows = conn.execute(text("SELECT open_id, videos, views FROM tiktok.mart_account_engagement")).all()
    assert rows == [("acct-1", 1, 1000)]


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
