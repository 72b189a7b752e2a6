"""A reconnect through the connect DAG counts as a new authorization: an older deauthorization changes nothing.

TikTok redelivers webhooks. The accounts UI records when an account was authorized, so an
``authorization.removed`` older than the authorization is ignored; a reconnect through the
``tiktok_connect_account`` DAG (a new code, or a refresh token from a Variable) must count too, or a
redelivered removal disconnects the account the creator just reconnected, and with
``disconnected_retention_days = 0`` purges every row of it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text


def _signed(body: bytes, secret: str, at: int) -> str:
    return f"t={at},s={hmac.new(secret.encode(), f'{at}.'.encode() + body, hashlib.sha256).hexdigest()}"


def _deliver(hook: Any, body: bytes, retention: int | None) -> dict[str, Any]:
    from tiktok_accounts.service import Backend, handle_webhook
    from tiktok_accounts.settings import AccountsSettings

    backend = Backend(config=hook.config, engine=hook.token_store.engine)
    settings = AccountsSettings(None, None, (30, 7, 1), retention, "base64url")
    now = datetime.now(UTC)
    return handle_webhook(
        backend, settings, signature=_signed(body, hook.config.client_secret, int(now.timestamp())), body=body, now=now
    )


def _account(engine: Any, open_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT status, disconnected_at FROM tiktok.accounts WHERE open_id = :o"), {"o": open_id}
        ).first()


@pytest.mark.parametrize("how", ["auth_code", "refresh_token_variable"])
def test_a_redelivered_removal_older_than_a_dag_reconnect_neither_disconnects_nor_purges(
    sim: Any, hook: Any, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiktok_pipeline.connect import connect_account
    from tiktok_tools.simaccounts import connect_conf

    engine = hook.token_store.engine
    open_id = sim.admin.create_account(videos=0)["open_id"]
    connect_account(connect_conf(sim.admin, open_id), tiktok_conn_id=hook.tiktok_conn_id)

    # The creator removes the app: TikTok's webhook disconnects the account (rows kept: retention 0 purges).
    removed_at = int(time.time())
    body = json.dumps(
        {
            "client_key": hook.config.client_key,
            "event": "authorization.removed",
            "create_time": removed_at,
            "user_openid": open_id,
            "content": json.dumps({"reason": 1}),
        }
    ).encode()
    assert _deliver(hook, body, retention=None)["result"] == "disconnected"
    time.sleep(1.1)  # TikTok's create_time has whole seconds: the reconnect is in a later one

    # The creator authorizes again; on-call reconnects through the DAG, as the README says.
    if how == "auth_code":
        conf = connect_conf(sim.admin, open_id)
    else:
        second = connect_conf(sim.admin, open_id)  # a refresh token obtained elsewhere, put in a Variable
        token = hook.exchange_code(second["auth_code"], second["redirect_uri"]).refresh_token
        monkeypatch.setenv("AIRFLOW_VAR_TIKTOK_REFRESH_TOKEN_BACK", token)
        conf = {"refresh_token_variable": "tiktok_refresh_token_back"}
    connect_account(conf, tiktok_conn_id=hook.tiktok_conn_id)
    assert _account(engine, open_id).status == "active"

    # TikTok redelivers the old removal (same create_time, signed anew), with a retention of 0 days.
    result = _deliver(hook, body, retention=0)

    row = _account(engine, open_id)
    assert row is not None, "the reconnected account was purged by a removal older than its reconnect"
    assert (result["result"], result["purged"], row.status) == ("stale", False, "active")
    assert row.disconnected_at is None, "a reconnected account still carries its old disconnect time"
