"""A batch account's time limit against the simulator over real HTTP and the real Postgres.

The account's limit is a SIGALRM that raises wherever the account's code happens to be. In the
middle of a token refresh that is the one place it must not land: TikTok has rotated the refresh
token as soon as it read the request, and a refresh whose answer is thrown away leaves the store
with a refresh token TikTok no longer takes -- the account needs its creator to authorize again.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from datetime import timedelta
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]  # the simulator's non-secret handle on a token


def test_an_account_time_limit_does_not_throw_away_a_rotated_refresh_token(sim: Any, hook: Any) -> None:
    from airflow.sdk.exceptions import AirflowException

    from tiktok_pipeline.connect import connect_account
    from tiktok_pipeline.operators import TikTokUserInfoToPostgresOperator
    from tiktok_tools.simaccounts import connect_conf

    open_id = sim.admin.create_account(videos=0)["open_id"]
    connect_account(connect_conf(sim.admin, open_id), tiktok_conn_id=hook.tiktok_conn_id)
    sim.admin.expire_access_tokens(open_id)  # the profile call is refused: the hook refreshes, on the main thread
    # TikTok takes 2 s to answer the refresh (and rotates the refresh token when it does); the account's limit is 0.5 s.
    sim.admin.set_faults("oauth_token", queue=[("slow", 1)], slow_seconds=2.0)
    op = TikTokUserInfoToPostgresOperator(
        task_id="snapshot",
        accounts=[{"open_id": open_id, "account_name": "Ada"}],
        fields=["display_name"],
        execution_timeout=timedelta(seconds=0.5),
    )

    with contextlib.suppress(AirflowException):  # it may be over its limit: what counts is the token left behind
        op.execute({})

    # TikTok answers (and rotates) whether or not we are still listening: wait for that answer.
    for _ in range(200):
        if any(
            r.get("grant_type") == "refresh_token" for r in sim.admin.requests(endpoint="oauth_token", open_id=open_id)
        ):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the refresh never reached the simulator")
    live = [t["fingerprint"] for t in sim.admin.tokens(open_id) if t["kind"] == "refresh" and t["status"] == "active"]
    assert len(live) == 1, sim.admin.tokens(open_id)
    stored = hook.token_store.get(open_id)
    assert _fingerprint(stored.refresh_token) == live[0], (
        "the store keeps a refresh token TikTok already rotated: the account must be reconnected by its creator"
    )
    assert stored.status == "active"


def test_the_task_timeout_does_not_throw_away_a_rotated_refresh_token(sim: Any, hook: Any) -> None:
    """The same, for a task of one account: Airflow's own SIGALRM timer, as the task runner arms it."""
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.timeout import timeout

    from tiktok_pipeline.connect import connect_account
    from tiktok_pipeline.operators import TikTokUserInfoToPostgresOperator
    from tiktok_tools.simaccounts import connect_conf

    open_id = sim.admin.create_account(videos=0)["open_id"]
    connect_account(connect_conf(sim.admin, open_id), tiktok_conn_id=hook.tiktok_conn_id)
    sim.admin.expire_access_tokens(open_id)
    sim.admin.set_faults("oauth_token", queue=[("slow", 1)], slow_seconds=2.0)
    op = TikTokUserInfoToPostgresOperator(task_id="snapshot", open_id=open_id, fields=["display_name"])

    with contextlib.suppress(AirflowTaskTimeout), timeout(1):
        op.execute({})

    for _ in range(200):
        if any(
            r.get("grant_type") == "refresh_token" for r in sim.admin.requests(endpoint="oauth_token", open_id=open_id)
        ):
            break
        time.sleep(0.05)
    live = [t["fingerprint"] for t in sim.admin.tokens(open_id) if t["kind"] == "refresh" and t["status"] == "active"]
    assert _fingerprint(hook.token_store.get(open_id).refresh_token) == live[0]
