"""
### Connect a TikTok account

Trigger this DAG to connect a creator's account, or to reconnect one whose status is
`reauth_required`. Give **either** the `auth_code` and `redirect_uri` your app received after the
creator authorized it on TikTok (plus the PKCE `code_verifier` if your app uses PKCE), **or** the
name of an Airflow Variable holding a refresh token you already have (`refresh_token_variable`).

The task first checks that the tokens can be stored (encryption key, warehouse reachable, migrated
and writable) -- before it spends the code or the refresh token, which work only once. Then it
exchanges (or rotates) it, stores the account with its tokens **encrypted** in `tiktok.accounts`,
and fetches the profile. Reconnecting replaces the tokens and makes the account `active` again.

**Why never the token itself:** a run's configuration is stored in plain text and shown to everyone
who can see the run, and stays there after the run. An authorization code is single-use and lives
minutes, so it may go there; a refresh token lives for months, so a run is refused at trigger time
if its configuration holds one (in any field), and its task refuses to run. Put it in a Variable
named `tiktok_refresh_token_<name>` (Airflow encrypts Variables and masks values of names holding
`token`), e.g. `airflow variables set tiktok_refresh_token_alice rft.…`, and give that name; no
other Variable is ever read. The task deletes the Variable once the rotated token is stored. If a
token did end up in a run's configuration, treat it as leaked: reconnect the account (which
rotates its tokens) and delete the run.

The run's return value shows the account's `open_id` and the scopes it granted, and how its first
profile fetch went: `profile` is `fetched`, `refused` (TikTok answered with an error),
`not_fetched` (a transient fault; the next profile snapshot fills it in) or `not_allowed` (the
account did not grant `user.info.basic`). When it is not `fetched`, `problem` says what TikTok
answered (with its `log_id`) and what to do, and `usable: false` means the account cannot work
as connected (its new token is refused, it is now `reauth_required`, or it gives no profile):
reconnect it. The task log says the same, as an ERROR (cannot work) or a WARNING.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import Param, dag, task

from tiktok_pipeline.common import DEFAULT_ARGS, TIKTOK_CONN_ID
from tiktok_pipeline.connect import NOT_A_TOKEN_PATTERN, VARIABLE_PATTERN
from tiktok_pipeline.names import CONNECT_DAG_ID

#: Its own pool (created by ``make bootstrap``): an auth code lives minutes, so connecting must not
#: queue behind backfills in the tiktok_api pool. It makes two API calls; the pool still bounds it.
CONNECT_POOL = "tiktok_connect"
#: Ahead of anything else waiting for a worker slot (absolute: connect has no downstream tasks).
CONNECT_PRIORITY = 100

CONNECT_DOC = """
### connect
Exchanges the authorization code (or refresh token) at TikTok's token endpoint, stores the
account with encrypted tokens, fetches its profile.

It runs in its own pool (`tiktok_connect`) at a high priority, so a code never expires queued
behind a backfill.

**On failure:**
- missing or invalid `token_encryption_key`, warehouse not migrated or not writable: nothing was
  sent to TikTok. Fix it (the log says what) and trigger again -- with a new code if this one has
  expired meanwhile. A warehouse that is merely unreachable is retried automatically.
- `invalid_grant`: the code was already used, has expired (codes live minutes), or the
  `redirect_uri` differs from the one used to authorize. Ask the creator to authorize again and
  trigger a new run; do **not** clear this task with the same code.
- `invalid_client`: the client key/secret in the `tiktok_default` connection are wrong.
- "TikTok issued new tokens ... could not store them": the warehouse failed for minutes right
  after the exchange; the code (or refresh token) is spent. Fix the warehouse, then have the
  creator authorize again.
- network / 5xx at TikTok: retried automatically (nothing came back, so nothing is lost); if
  retries run out, trigger again.

A failure after the tokens are stored never retries the task (that would spend the code twice).
A refused profile fetch does not fail it either (the account is stored): the task's return value
(`profile`, `usable`, `problem`) and an ERROR or WARNING line in its log say what TikTok answered,
with its `log_id`, and what to do next.
"""


@dag(
    dag_id=CONNECT_DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={**DEFAULT_ARGS, "retries": 2},
    tags=["tiktok", "oauth"],
    doc_md=__doc__,
    max_active_runs=4,
    params={
        "auth_code": Param(
            None,
            type=["null", "string"],
            maxLength=1024,
            pattern=NOT_A_TOKEN_PATTERN,
            title="Authorization code",
            description="The code TikTok sent to your redirect URI after the creator authorized the app.",
        ),
        "redirect_uri": Param(
            None,
            type=["null", "string"],
            maxLength=2048,
            pattern=r"^https?://",
            title="Redirect URI",
            description="Exactly the redirect_uri used in the authorization request.",
        ),
        "code_verifier": Param(
            None,
            type=["null", "string"],
            maxLength=256,
            pattern=NOT_A_TOKEN_PATTERN,
            title="PKCE code verifier",
            description="Only if the app used PKCE when it asked for the code.",
        ),
        # Kept only to refuse it: a conf holding a string here fails validation at trigger time, before
        # the run (and its conf) is stored, so no run's configuration ever holds a live refresh token.
        # (A key that is not a param at all would be accepted silently.)
        "refresh_token": Param(
            None,
            type="null",
            title="Refresh token: not accepted here",
            description=(
                "Leave empty. A run's configuration is visible to everyone who can see the run, so a refresh "
                "token is refused here: put it in a Variable and give the Variable's name below."
            ),
        ),
        "refresh_token_variable": Param(
            None,
            type=["null", "string"],
            # A prefix and no dots: only our Variables can be read, and a pasted token (rft.…) never matches.
            pattern=VARIABLE_PATTERN,
            title="Variable holding a refresh token",
            description=(
                "Instead of a code: the NAME of an Airflow Variable, tiktok_refresh_token_<name>, holding a "
                "refresh token you already hold -- never the token itself (rft.…), which is refused: a run's "
                "configuration is readable by everyone who can see the run. Create it with: airflow variables set "
                "tiktok_refresh_token_<name> <token>. It is spent only once the tokens it buys can be stored; then "
                "the Variable is deleted."
            ),
        ),
    },
)
def tiktok_connect_account() -> None:
    @task(pool=CONNECT_POOL, priority_weight=CONNECT_PRIORITY, weight_rule="absolute", doc_md=CONNECT_DOC)
    def connect(params: dict[str, Any] | None = None, dag_run: Any = None) -> dict[str, Any]:
        from tiktok_pipeline.connect import connect_account

        # The whole conf, not just the params: keys that are not params get through at trigger time.
        conf = dict(getattr(dag_run, "conf", None) or {}) if dag_run is not None else None
        return connect_account(params or {}, tiktok_conn_id=TIKTOK_CONN_ID, conf=conf)

    connect()


dag_object = tiktok_connect_account()

if __name__ == "__main__":
    dag_object.test()
