"""A connect run whose credential TikTok refuses says why, and changes no account (nothing is stored yet)."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from sqlalchemy import text


def _statuses(engine: Any) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT open_id, status FROM tiktok.accounts")).all())


@pytest.mark.parametrize("how", ["used", "expired"])
def test_a_refused_authorization_code_says_so_and_marks_no_account(sim: Any, hook: Any, how: str) -> None:
    from tiktok_pipeline.connect import connect_account
    from tiktok_tools.simaccounts import connect_conf

    open_id = sim.admin.create_account(videos=0)["open_id"]
    conf = connect_conf(sim.admin, open_id)
    if how == "used":
        connect_account(conf, tiktok_conn_id=hook.tiktok_conn_id)
    else:
        sim.admin.advance_clock(sim.admin.config()["code_ttl"] + 60)
    before = _statuses(hook.token_store.engine)

    with pytest.raises(AirflowFailException) as failed:
        connect_account(conf, tiktok_conn_id=hook.tiktok_conn_id)

    message = str(failed.value)
    assert message.startswith("TikTok refused the authorization code (invalid_grant: "), message
    assert "[log_id=" in message and "[log_id=none]" not in message
    assert "has expired (codes live minutes), was used already" in message
    assert "Nothing was stored and no account was changed" in message
    assert "reauth_required" not in message
    assert conf["auth_code"] not in message
    assert _statuses(hook.token_store.engine) == before


def test_a_refused_refresh_token_from_a_variable_says_so_and_marks_no_account(
    sim: Any, hook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiktok_pipeline.connect import connect_account

    open_id = sim.admin.create_account(videos=0)["open_id"]
    token = sim.get_tokens(open_id).refresh_token
    sim.admin.revoke(open_id)
    monkeypatch.setenv("AIRFLOW_VAR_TIKTOK_REFRESH_TOKEN_GONE", token)
    before = _statuses(hook.token_store.engine)

    with pytest.raises(AirflowFailException) as failed:
        connect_account({"refresh_token_variable": "tiktok_refresh_token_gone"}, tiktok_conn_id=hook.tiktok_conn_id)

    message = str(failed.value)
    assert message.startswith("TikTok refused the refresh token in Variable 'tiktok_refresh_token_gone' ("), message
    assert "[log_id=none]" not in message and "reauth_required" not in message and token not in message
    assert "Nothing was stored and no account was changed; the Variable is kept" in message
    assert _statuses(hook.token_store.engine) == before
