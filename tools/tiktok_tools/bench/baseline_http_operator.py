"""
### The obvious Airflow way to backfill a TikTok account's videos (the baseline of `make bench`)

What a typical Airflow user writes from the providers' documentation, without our provider:

1. `create_table`: a `SQLExecuteQueryOperator` makes sure `baseline.videos` exists;
2. `fetch_videos`: an `HttpOperator` calls `POST /v2/video/list/` and follows the cursor with a
   `pagination_function` until `has_more` is false; its `response_filter` flattens every page's
   videos into one list, which becomes the task's XCom;
3. `load_videos`: a `@task` pulls that list and upserts it with `PostgresHook.insert_rows(...,
   replace=True, replace_index="id")` (so a re-run updates instead of failing on the key).

One account, whose bearer token is the Airflow Variable `tiktok_access_token`; the `tiktok_http`
(HTTP) and `tiktok_warehouse` (Postgres) connections say where TikTok and the warehouse are.
It asks for the same fields as `TikTokVideoListToPostgresOperator` and is run by `make bench` through
`dag.test()` exactly as our `tiktok_video_backfill` is, on the same simulator data.

It is not part of the pipeline and lives outside `dags/`, so no DAG processor ever loads it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.providers.http.operators.http import HttpOperator
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk import dag, task

from tiktok_provider.fields import VIDEO_FIELDS

FIELDS = list(VIDEO_FIELDS)  # the same fields our operators ask for, so both sides move the same bytes

CREATE_TABLE = """
CREATE SCHEMA IF NOT EXISTS baseline;
CREATE TABLE IF NOT EXISTS baseline.videos (
    id text PRIMARY KEY,
    create_time bigint,
    cover_image_url text,
    share_url text,
    video_description text,
    duration integer,
    height integer,
    width integer,
    title text,
    embed_html text,
    embed_link text,
    like_count bigint,
    comment_count bigint,
    share_count bigint,
    view_count bigint
);
"""


def next_page(response: Any) -> dict[str, Any] | None:
    """Ask for the page after this one while TikTok says there is more."""
    data = response.json()["data"]
    if data.get("has_more"):
        return {"data": json.dumps({"max_count": 20, "cursor": data["cursor"]})}
    return None


def all_videos(responses: list[Any]) -> list[dict[str, Any]]:
    """Flatten the pages into one list of videos."""
    return [video for response in responses for video in response.json()["data"]["videos"]]


@dag(
    dag_id="baseline_http_operator_backfill",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"owner": "data-platform", "retries": 0},
    tags=["bench", "baseline"],
    doc_md=__doc__,
)
def baseline_http_operator_backfill() -> None:
    create_table = SQLExecuteQueryOperator(task_id="create_table", conn_id="tiktok_warehouse", sql=CREATE_TABLE)

    fetch_videos = HttpOperator(
        task_id="fetch_videos",
        http_conn_id="tiktok_http",
        method="POST",
        endpoint="/v2/video/list/?fields=" + ",".join(FIELDS),
        data=json.dumps({"max_count": 20}),
        headers={
            "Authorization": "Bearer {{ var.value.tiktok_access_token }}",
            "Content-Type": "application/json",
        },
        pagination_function=next_page,
        response_filter=all_videos,
    )

    @task
    def load_videos(videos: list[dict[str, Any]]) -> int:
        rows = [tuple(video.get(name) for name in FIELDS) for video in videos]
        PostgresHook(postgres_conn_id="tiktok_warehouse").insert_rows(
            "baseline.videos", rows, target_fields=FIELDS, replace=True, replace_index="id"
        )
        return len(rows)

    create_table >> fetch_videos
    load_videos(fetch_videos.output)


dag_object = baseline_http_operator_backfill()

if __name__ == "__main__":
    dag_object.test()
