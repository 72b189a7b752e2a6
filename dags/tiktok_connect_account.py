"""
### Connect a TikTok account

Trigger this DAG to connect a creator's account, or to reconnect one whose status is
`reauth_required`. Give **either** the `auth_code` and `redirect_uri` your app received after the
creator authorized it on TikTok (plus the PKCE `code_verifier` if your app uses PKCE), **or** a
`refresh_token` you already hold, **or** (better) the name of an Airflow Variable that holds it
(`refresh_token_variable`).

The task exchanges (or refreshes) the token, fetches the profile, and stores the account with its
tokens **encrypted** in `tiktok.accounts`. Reconnecting replaces the tokens and makes the account
`active` again.

**Why a Variable is better than the token itself:** a run's configuration is stored in plain text and shown
to everyone who can see the run. An authorization code is single-use and short-lived, so it may go
there; a refresh token lives for months. Put it in a Variable whose name contains `token` (Airflow
encrypts Variables and masks such names), e.g. `airflow variables set tiktok_refresh_token_alice
rft.…`; the task rotates the token at once and deletes the Variable when the account is connected.
A `refresh_token` given directly is rotated at once too, so the copy left in the run's
configuration is dead as soon as the run succeeds.

The run's return value shows the account's `open_id` and the scopes it granted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import Param, dag, task

from tiktok_pipeline.common import API_POOL, DEFAULT_ARGS, TIKTOK_CONN_ID

CONNECT_DOC = """
### connect
Exchanges the authorization code (or refresh token) at TikTok's token endpoint, stores the
account with encrypted tokens, fetches its profile.

**On failure:**
- `invalid_grant`: the code was already used, has expired (codes live minutes), or the
  `redirect_uri` differs from the one used to authorize. Ask the creator to authorize again and
  trigger a new run; do **not** clear this task with the same code.
- `invalid_client`: the client key/secret in the `tiktok_default` connection are wrong.
- missing `token_encryption_key`: add it to the `tiktok_default` connection's extra.
- network / 5xx: retried automatically; if retries run out, clear the task.
"""


@dag(
    dag_id="tiktok_connect_account",
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
            title="Authorization code",
            description="The code TikTok sent to your redirect URI after the creator authorized the app.",
        ),
        "redirect_uri": Param(
            None,
            type=["null", "string"],
            maxLength=2048,
            title="Redirect URI",
            description="Exactly the redirect_uri used in the authorization request.",
        ),
        "code_verifier": Param(
            None,
            type=["null", "string"],
            maxLength=256,
            title="PKCE code verifier",
            description="Only if the app used PKCE when it asked for the code.",
        ),
        "refresh_token": Param(
            None,
            type=["null", "string"],
            maxLength=2048,
            title="Refresh token",
            description=(
                "Instead of a code: a refresh token you already hold. It is rotated at once, so the value "
                "left in the run's configuration stops working; prefer refresh_token_variable below."
            ),
        ),
        "refresh_token_variable": Param(
            None,
            type=["null", "string"],
            pattern=r"^[A-Za-z0-9_.-]{1,250}$",
            title="Variable holding a refresh token",
            description=(
                "Instead of a code: the name of an Airflow Variable holding a refresh token you already "
                "hold (never the token itself: a run's configuration is readable by everyone who can see "
                "the run). The token is rotated at once and the Variable deleted."
            ),
        ),
    },
)
def tiktok_connect_account() -> None:
    @task(pool=API_POOL, doc_md=CONNECT_DOC)
    def connect(params: dict[str, Any] | None = None) -> dict[str, Any]:
        from tiktok_pipeline.connect import connect_account

        return connect_account(params or {}, tiktok_conn_id=TIKTOK_CONN_ID)

    connect()


dag_object = tiktok_connect_account()

if __name__ == "__main__":
    dag_object.test()
