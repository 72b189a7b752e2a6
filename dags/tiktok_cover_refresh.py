"""
### Refresh cover image URLs before they go stale

TikTok's `cover_image_url` is a signed link that stops working after about 6 hours. Every hour,
for each active account, this DAG finds the videos whose cover expires within `horizon_minutes`
(or has expired) and asks `POST /v2/video/query/` for them, 20 ids a call. It stores the new
`cover_image_url` and `cover_expires_at` and the fresh counts. It also asks about the account's
pending removals and the videos marked removed in the last 7 days. A live video an answer leaves
out for the first time gets `missing_since`; a later run, an hour or more on, that finds it missing
again marks it removed (unless that would be over 20% of the account: then none is, with a
warning); a removed video that comes back is restored.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag

from tiktok_pipeline.alert_digest import RunAlertNotifier, digest_task
from tiktok_pipeline.assets import VIDEO_COVERS, VIDEO_SNAPSHOTS, publish_task
from tiktok_pipeline.common import (
    ACCOUNTS_PARAM,
    API_POOL,
    DEFAULT_ARGS,
    MAP_INDEX_TEMPLATE,
    TIKTOK_CONN_ID,
    for_each_account,
    quality_check,
    summary_task,
)
from tiktok_pipeline.names import COVER_DAG_ID
from tiktok_pipeline.operators import TikTokVideoQueryToPostgresOperator
from tiktok_pipeline.runbooks import error_runbook

REFRESH_DOC = """
### refresh_covers
Re-queries one account's videos whose cover URL expires within `horizon_minutes`
(`POST /v2/video/query/`, 20 ids a call) and stores the new URLs and counts.

**On failure:** 429 / 5xx / timeouts are retried with backoff; clearing the task is safe (it only
picks covers that are still stale). *reauth required*: reconnect the account with
`tiktok_connect_account`. The message carries TikTok's `log_id`.
*removals_held* warning: see the `tiktok_video_backfill` runbook (usually nothing to do).
"""

CHECK_SQL = """
SELECT
  (SELECT count(*) FROM tiktok.videos
    WHERE like_count < 0 OR comment_count < 0 OR share_count < 0 OR view_count < 0) = 0
    AS no_negative_video_counts,
  (SELECT count(*) - count(DISTINCT id) FROM tiktok.videos) = 0 AS no_duplicate_videos,
  (SELECT count(*) FROM tiktok.videos
    WHERE cover_image_url IS NOT NULL AND cover_expires_at IS NULL AND removed_at IS NULL) = 0
    AS every_cover_has_an_expiry
"""


@dag(
    dag_id=COVER_DAG_ID,
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["tiktok", "videos", "covers", "hourly"],
    doc_md=__doc__,
    params={
        "accounts": ACCOUNTS_PARAM,
        "horizon_minutes": Param(
            60,
            type="integer",
            minimum=0,
            maximum=10080,
            title="Horizon (minutes)",
            description="Refresh covers that expire within this many minutes (or have expired).",
        ),
    },
)
def tiktok_cover_refresh() -> None:
    refreshes = for_each_account(
        TikTokVideoQueryToPostgresOperator.partial(
            task_id="refresh_covers",
            tiktok_conn_id=TIKTOK_CONN_ID,
            horizon_minutes="{{ params.horizon_minutes }}",
            pool=API_POOL,
            map_index_template=MAP_INDEX_TEMPLATE,
            on_failure_callback=RunAlertNotifier(),
            doc_md=REFRESH_DOC + error_runbook(removals=True),
        )
    )

    check = quality_check(
        "check_covers",
        CHECK_SQL,
        what="no negative counts, no duplicate videos, every stored cover URL has an expiry.",
    )

    refreshes >> check >> summary_task(refreshes.output)
    refreshes >> digest_task()
    check >> publish_task([VIDEO_COVERS, VIDEO_SNAPSHOTS], refreshes.output)


dag_object = tiktok_cover_refresh()

if __name__ == "__main__":
    dag_object.test()
