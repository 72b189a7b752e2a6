"""
### Backfill and keep current every account's video list

**Scheduled daily in `recent` mode:** for each active account, pages through
`POST /v2/video/list/` newest first until it passes the last `lookback_days` days, adding new
videos, updating counts (`tiktok.videos`) and writing today's engagement history
(`tiktok.video_snapshots`). Videos inside the window that TikTok no longer lists are asked about
with `POST /v2/video/query/` (20 a call, only when there are any). One left out for the first time
only gets `missing_since` (a pending removal); it is marked removed (`removed_at`) when a later run,
an hour or more on, finds it missing again. One that comes back is restored and cleared.

**Triggered with `mode = whole_history`** (old name `full`, still accepted): walks each
account's whole history. This is not Airflow's *Backfill* (a range of past dates). The cursor is committed with
the pages it stores (each page, or the few that arrived during the last write), so a retry after a
crash continues from the last committed page instead of starting over, asking again for at most 8
pages; when the walk completes, every stored video it did not meet is confirmed the same way.

Re-running or clearing any task leaves the warehouse as one clean run would.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag

from tiktok_pipeline.alert_digest import RunAlertNotifier, digest_task
from tiktok_pipeline.assets import VIDEO_SNAPSHOTS, VIDEOS, publish_task
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
from tiktok_pipeline.deadlines import daily_run_deadline
from tiktok_pipeline.names import BACKFILL_DAG_ID
from tiktok_pipeline.operators import TikTokVideoListToPostgresOperator
from tiktok_pipeline.runbooks import error_runbook

SYNC_DOC = """
### sync_videos
Pages through one account's videos (`POST /v2/video/list/`, 20 a call) into `tiktok.videos` and
`tiktok.video_snapshots`, committing the cursor with the pages it stores (`tiktok.sync_state`).

**On failure:**
- 429 / 5xx / timeouts are retried with backoff. A retry **resumes** from the last committed page.
- *reauth required*: reconnect the account with `tiktok_connect_account`, then clear this task.
- *AccountTimeLimitReached* (a batch task of many accounts): that account ran past the task's
  `execution_timeout`, which each account of a batch has as its own. The others went on; its stored
  pages stay, and the retry (or a clear) resumes it from its last committed page. If it keeps timing
  out, raise `execution_timeout`.
- *the batch task timed out as a whole*: its own limit is its accounts' limits added up, at most
  `[tiktok] batch_timeout_hours` (default 24); its log says how far it got, and a clear redoes only
  the accounts not done. If it keeps happening, raise `batch_timeout_hours` or lower
  `[tiktok] accounts_per_batch` (raising `execution_timeout` does not help past the cap).
- *cursor did not advance* / *malformed response*: TikTok broke the paging contract; the pages
  before it are stored. Send the `log_id` to TikTok support; clearing the task resumes from the
  stored cursor.
- `video/query` keeps failing after the listing: the retries only ask about the stored removal
  suspects. The next scheduled run finishes that sync (its unanswered suspects are handed on,
  none is marked removed) and lists afresh, so new videos never wait for `video/query`.
- WARNING *none is marked removed (removals_held=N)*: more than 20% (and more than 5) of the
  account's live videos were missing twice -- usually an outage or an account made private.
  Nothing to do: they stay pending and come back, or are judged again, next run. If the creator
  really deleted them, mark them by hand:
  `UPDATE tiktok.videos SET removed_at = now() WHERE open_id = '<open_id>' AND removed_at IS NULL
  AND missing_since < now() - interval '1 hour';`
"""

CHECK_SQL = """
SELECT
  (SELECT count(*) FROM tiktok.videos
    WHERE like_count < 0 OR comment_count < 0 OR share_count < 0 OR view_count < 0) = 0
    AS no_negative_video_counts,
  (SELECT count(*) FROM tiktok.video_snapshots
    WHERE like_count < 0 OR comment_count < 0 OR share_count < 0 OR view_count < 0) = 0
    AS no_negative_snapshot_counts,
  (SELECT count(*) - count(DISTINCT id) FROM tiktok.videos) = 0 AS no_duplicate_videos,
  (SELECT count(*) FROM (SELECT video_id, snapshot_date FROM tiktok.video_snapshots
    GROUP BY video_id, snapshot_date HAVING count(*) > 1) AS d) = 0 AS one_snapshot_per_video_per_day,
  (SELECT count(*) FROM tiktok.video_snapshots s
    LEFT JOIN tiktok.videos v ON v.id = s.video_id WHERE v.id IS NULL) = 0 AS no_orphan_snapshots
"""


@dag(
    dag_id=BACKFILL_DAG_ID,
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    deadline=daily_run_deadline(),
    tags=["tiktok", "videos", "daily"],
    doc_md=__doc__,
    params={
        "mode": Param(
            "recent",
            type="string",
            enum=["recent", "whole_history", "incremental", "full"],
            values_display={
                "recent": "recent: videos of the last lookback_days days",
                "whole_history": "whole_history: every video of the account (resumable)",
                "incremental": "incremental (old name of recent)",
                "full": "full (old name of whole_history)",
            },
            title="Which videos",
            description="recent: the newest videos, back lookback_days days (what the daily run does). "
            "whole_history: every video the account has, page by page; a retry resumes. This is not "
            "Airflow's Backfill (a range of past dates): TikTok only answers with today's numbers.",
        ),
        "accounts": ACCOUNTS_PARAM,
        "lookback_days": Param(
            7,
            type=["null", "integer"],
            minimum=1,
            maximum=3650,
            title="Lookback (days)",
            description="Only for recent: how many days back to re-read counts and look for new or removed "
            "videos. Empty means 7. Not used by whole_history.",
        ),
    },
)
def tiktok_video_backfill() -> None:
    syncs = for_each_account(
        TikTokVideoListToPostgresOperator.partial(
            task_id="sync_videos",
            tiktok_conn_id=TIKTOK_CONN_ID,
            mode="{{ params.mode }}",
            lookback_days="{{ params.lookback_days }}",
            pool=API_POOL,
            map_index_template=MAP_INDEX_TEMPLATE,
            on_failure_callback=RunAlertNotifier(),
            doc_md=SYNC_DOC + error_runbook(removals=True),
        )
    )

    check = quality_check(
        "check_videos",
        CHECK_SQL,
        what="no negative counts, no duplicate videos, one snapshot per video per day, no orphan snapshots.",
    )

    syncs >> check >> summary_task(syncs.output)
    syncs >> digest_task()
    check >> publish_task([VIDEOS, VIDEO_SNAPSHOTS], syncs.output)


dag_object = tiktok_video_backfill()

if __name__ == "__main__":
    dag_object.test()
