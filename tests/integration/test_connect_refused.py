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


def _status(engine: Any, open_id: str) -> str | None:
    return _statuses(engine).get(open_id)


def test_an_account_without_user_info_basic_is_connected_and_the_result_says_it_cannot_have_profiles(
    sim: Any, hook: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from tiktok_pipeline.connect import connect_account
    from tiktok_tools.simaccounts import connect_conf

    open_id = sim.admin.create_account(videos=0)["open_id"]
    sim.admin.reset_stats()
    with caplog.at_level("INFO", logger="tiktok_pipeline.connect"):
        result = connect_account(connect_conf(sim.admin, open_id, ["video.list"]), tiktok_conn_id=hook.tiktok_conn_id)

    assert _status(hook.token_store.engine, open_id) == "active", "the tokens are stored: the connect stands"
    assert (result["profile"], result["usable"]) == ("not_allowed", False), result
    problem = result["problem"]
    assert "is connected (its tokens are stored), but it did not grant user.info.basic" in problem
    assert "every tiktok_profile_snapshot run will fail for it" in problem and "Reconnect" in problem
    assert sim.admin.stats()["endpoints"].get("user_info", {}).get("requests", 0) == 0
    [error] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert error.getMessage() == problem
    assert not [r for r in caplog.records if r.getMessage().startswith("Connected account") and r.levelname == "INFO"]


def test_a_refused_first_profile_fetch_is_said_with_tiktoks_log_id_and_the_next_step(sim: Any, hook: Any) -> None:
    from tiktok_pipeline.connect import connect_account
    from tiktok_tools.simaccounts import connect_conf

    open_id = sim.admin.create_account(videos=0)["open_id"]
    sim.admin.fail_next("user_info", "unknown_error_code")

    result = connect_account(connect_conf(sim.admin, open_id), tiktok_conn_id=hook.tiktok_conn_id)

    assert _status(hook.token_store.engine, open_id) == "active"
    assert result["profile"] == "refused" and result["display_name"] is None, result
    [asked] = [r for r in sim.admin.requests(endpoint="user_info") if r["open_id"] == open_id]
    problem = result["problem"]
    assert f"[log_id={asked['log_id']}]" in problem and "sim_unknown_error" in problem, problem
    assert "TikTok refused its first profile fetch" in problem
    assert "send TikTok support the log_id" in problem and "The next tiktok_profile_snapshot run tries again" in problem


def test_an_access_revoked_right_after_the_exchange_leaves_the_account_reauth_required_and_says_so(
    sim: Any, hook: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner revokes the app while the connect runs: stored, then refused, and the result says it cannot work."""
    from tiktok_pipeline.connect import connect_account
    from tiktok_tools.simaccounts import connect_conf
    from tiktok_warehouse.tokens import TokenStore

    open_id = sim.admin.create_account(videos=0)["open_id"]
    save_grant = TokenStore.save_grant

    def save_then_revoke(self: Any, grant: Any, *args: Any, **kwargs: Any) -> Any:
        saved = save_grant(self, grant, *args, **kwargs)
        sim.admin.revoke(grant.open_id)  # at TikTok: both tokens, between the store and the first fetch
        return saved

    monkeypatch.setattr(TokenStore, "save_grant", save_then_revoke)

    result = connect_account(connect_conf(sim.admin, open_id), tiktok_conn_id=hook.tiktok_conn_id)

    assert _status(hook.token_store.engine, open_id) == "reauth_required"
    assert (result["profile"], result["usable"]) == ("refused", False), result
    problem = result["problem"]
    assert "now marked reauth_required and cannot sync" in problem and "[log_id=" in problem, problem
    assert "Reconnect" in problem


def test_the_connect_dag_succeeds_and_its_result_says_the_profile_was_refused(sim: Any, hook: Any) -> None:
    """Through dag.test(): the run is green (the account is stored), its return value says what went wrong."""
    from pathlib import Path

    from dag_support import states, xcom

    from tiktok_tools.dagrun import Dags
    from tiktok_tools.simaccounts import connect_conf

    open_id = sim.admin.create_account(videos=0)["open_id"]
    sim.admin.fail_next("user_info", "unknown_error_code")
    dags = Dags(Path(__file__).resolve().parents[2] / "dags")

    run = dags.run("tiktok_connect_account", **connect_conf(sim.admin, open_id))

    assert str(run.state) == "success", states(run)
    [result] = xcom(run, "connect")
    assert (result["open_id"], result["profile"], result["usable"]) == (open_id, "refused", True), result
    [asked] = [r for r in sim.admin.requests(endpoint="user_info") if r["open_id"] == open_id]
    assert f"[log_id={asked['log_id']}]" in result["problem"]
    assert _status(hook.token_store.engine, open_id) == "active"
