"""
### Daily profile snapshot of every connected TikTok account

Once a day, one task per **active** account (the grid shows its display name) fetches the
profile with every field the account's scopes allow and upserts today's row of
`tiktok.profile_snapshots`; the account's name and avatar in `tiktok.accounts` follow along.

**Dates:** a snapshot is always stored under the UTC date on which it was *captured*. Re-running
an old run therefore writes today's numbers under today's date (and replaces today's row); it
never writes today's numbers under the old run's date, since TikTok cannot tell us past values.

Trigger it by hand with `accounts` to snapshot only some accounts. One account's failure never
stops the others; the checks at the end run whatever happened.

**Consent:** `check_consent` warns in its log before a creator's consent (refresh token) runs out
(30, 7 and 1 days ahead by default) and marks lapsed accounts `reauth_required`, so no task tries them.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from tiktok_pipeline.alert_digest import RunAlertNotifier, digest_task
from tiktok_pipeline.assets import PROFILE_SNAPSHOTS, publish_task
from tiktok_pipeline.common import (
    ACCOUNTS_PARAM,
    API_POOL,
    DEFAULT_ARGS,
    MAP_INDEX_TEMPLATE,
    TIKTOK_CONN_ID,
    consent_check_task,
    for_each_account,
    quality_check,
    summary_task,
)
from tiktok_pipeline.deadlines import daily_run_deadline
from tiktok_pipeline.names import PROFILE_DAG_ID
from tiktok_pipeline.operators import TikTokUserInfoToPostgresOperator
from tiktok_pipeline.runbooks import error_runbook

SNAPSHOT_DOC = """
### snapshot_profile
Fetches one account's profile (`GET /v2/user/info/`) and upserts today's `profile_snapshots` row.

**On failure:**
- *reauth required / refresh token rejected*: the account is now `reauth_required` and is skipped
  by later runs. Ask the creator to authorize again and run `tiktok_connect_account`.
- *scope* errors: the account did not grant `user.info.stats`/`user.info.profile`; reconnect
  it with those scopes.
- 429 / 5xx / timeouts are retried with backoff; if retries run out, clear this task instance
  (safe: it upserts today's row).
The message carries TikTok's `log_id` for support.
"""

CHECK_SQL = """
SELECT
  (SELECT count(*) FROM tiktok.profile_snapshots
    WHERE follower_count < 0 OR following_count < 0 OR likes_count < 0 OR video_count < 0) = 0
    AS no_negative_counts,
  (SELECT count(*) FROM (SELECT open_id, snapshot_date FROM tiktok.profile_snapshots
    GROUP BY open_id, snapshot_date HAVING count(*) > 1) AS d) = 0
    AS one_snapshot_per_account_per_day,
  (SELECT count(*) FROM tiktok.profile_snapshots
    WHERE snapshot_date > (captured_at AT TIME ZONE 'UTC')::date) = 0
    AS no_snapshot_dated_after_capture
"""


@dag(
    dag_id=PROFILE_DAG_ID,
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    deadline=daily_run_deadline(),
    tags=["tiktok", "profile", "daily"],
    doc_md=__doc__,
    params={"accounts": ACCOUNTS_PARAM},
)
def tiktok_profile_snapshot() -> None:
    snapshots = for_each_account(
        TikTokUserInfoToPostgresOperator.partial(
            task_id="snapshot_profile",
            tiktok_conn_id=TIKTOK_CONN_ID,
            pool=API_POOL,
            map_index_template=MAP_INDEX_TEMPLATE,
            on_failure_callback=RunAlertNotifier(),
            doc_md=SNAPSHOT_DOC + error_runbook(),
        )
    )

    check = quality_check(
        "check_profile_snapshots",
        CHECK_SQL,
        what="no negative counts, one snapshot per account per day, no snapshot dated after its capture.",
    )

    snapshots >> check >> summary_task(snapshots.output)
    snapshots >> digest_task()
    check >> publish_task([PROFILE_SNAPSHOTS], snapshots.output)
    consent_check_task()


dag_object = tiktok_profile_snapshot()

if __name__ == "__main__":
    dag_object.test()
