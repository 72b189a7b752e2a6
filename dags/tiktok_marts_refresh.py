"""
### Keep the analyst marts fresh when TikTok data lands

Scheduled on the TikTok Assets (`tiktok.profile_snapshots`, `tiktok.videos`,
`tiktok.video_snapshots`): it runs whenever a TikTok DAG marks one of them updated, and refreshes
the warehouse's materialized marts (`tiktok.mart_account_engagement`, `tiktok.mart_top_videos_7d`)
through `tiktok.refresh_marts()`: `REFRESH MATERIALIZED VIEW CONCURRENTLY` (readers are never
blocked), as the views' owner (`SECURITY DEFINER`), so this DAG's least-privilege role may run it.

This is the example to copy: schedule your own DAG on the same Assets (`from
tiktok_pipeline.assets import PROFILE_SNAPSHOTS`), and read the event's extras (accounts, rows,
snapshot_date) from `triggering_asset_events`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from tiktok_pipeline.assets import PROFILE_SNAPSHOTS, VIDEO_SNAPSHOTS, VIDEOS
from tiktok_pipeline.common import DEFAULT_ARGS, TIKTOK_CONN_ID
from tiktok_pipeline.marts import refresh_task


@dag(
    dag_id="tiktok_marts_refresh",
    schedule=(PROFILE_SNAPSHOTS | VIDEOS | VIDEO_SNAPSHOTS),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["tiktok", "marts"],
    doc_md=__doc__,
)
def tiktok_marts_refresh() -> None:
    refresh_task(TIKTOK_CONN_ID)


dag_object = tiktok_marts_refresh()

if __name__ == "__main__":
    dag_object.test()
