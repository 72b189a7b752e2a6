"""Single-use credentials under failure: nothing is spent that cannot be stored, nothing issued is lost.

An authorization code works once; a refresh token stops working once TikTok rotates it. These
runs break the warehouse, the key, the profile call and the database session at the moments that
used to lose one, and check that the code is still unspent, or the rotated token stored and usable.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import psycopg2
import pytest
from chaos_support import SETTINGS, Child, rows, states, tries, wait_until
from sqlalchemy import text

pytestmark = pytest.mark.integration


def token_calls(sim: Any) -> dict[str, dict[str, int]]:
    return sim.admin.stats()["oauth"]["token"]


def new_code(sim: Any) -> tuple[str, dict[str, str]]:
    """A new account and the connect DAG's conf with a fresh code for it (spend it as often as needed)."""
    from tiktok_tools.simaccounts import connect_conf

    open_id = sim.admin.create_account(videos=3)["open_id"]
    return open_id, connect_conf(sim.admin, open_id)


def accounts_of(engine: Any, open_id: str) -> list[tuple]:
    return rows(engine, "SELECT status FROM tiktok.accounts WHERE open_id = :o", o=open_id)


# -- item 8: check the store before spending the code ---------------------------------------------


def test_connect_without_the_encryption_key_spends_nothing(sim, run_dag, tiktok_extra, clean_warehouse) -> None:
    open_id, code = new_code(sim)
    tiktok_extra(token_encryption_key="")
    sim.admin.reset_stats()
    run = run_dag("tiktok_connect_account", **code)
    assert states(run)[("connect", -1)] == "failed"
    assert tries(run)[("connect", -1)] == 1, "a missing key is not retried"
    assert token_calls(sim) == {}, "the code was never sent to TikTok"
    assert accounts_of(clean_warehouse, open_id) == []

    tiktok_extra()  # the operator adds the key and triggers again with the same code
    again = run_dag("tiktok_connect_account", **code)
    assert str(again.state) == "success", states(again)
    assert accounts_of(clean_warehouse, open_id) == [("active",)]


def test_connect_with_the_warehouse_down_spends_nothing_and_retries(
    sim, run_dag, chaos_env, clean_warehouse, monkeypatch
) -> None:
    open_id, code = new_code(sim)
    monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_WAREHOUSE", "postgresql://nobody:nothing@127.0.0.1:1/tiktok")
    sim.admin.reset_stats()
    run = run_dag("tiktok_connect_account", **code)
    assert states(run)[("connect", -1)] == "failed"
    assert tries(run)[("connect", -1)] == 3, "an unreachable warehouse is retried: the code is still good"
    assert token_calls(sim) == {}, "the code was never sent to TikTok"

    monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_WAREHOUSE", chaos_env["AIRFLOW_CONN_TIKTOK_WAREHOUSE"])
    again = run_dag("tiktok_connect_account", **code)
    assert str(again.state) == "success", states(again)
    assert accounts_of(clean_warehouse, open_id) == [("active",)]


# -- item 13: no retry spends the code twice ------------------------------------------------------


def test_a_failure_after_the_tokens_are_stored_does_not_spend_the_code_again(
    sim, run_dag, chaos_env, clean_warehouse
) -> None:
    open_id, code = new_code(sim)
    sim.admin.fail_next("user_info", "internal_error", count=1000)  # the profile cannot be fetched
    sim.admin.reset_stats()
    try:
        run = run_dag("tiktok_connect_account", **code)
    finally:
        sim.admin.clear_faults()
    assert str(run.state) == "success", states(run)
    assert tries(run)[("connect", -1)] == 1
    assert token_calls(sim) == {"authorization_code": {"ok": 1}}, "the code was sent exactly once"
    assert accounts_of(clean_warehouse, open_id) == [("active",)]


# -- item 14b: a refresh token never sits in a run's configuration --------------------------------


def test_a_refresh_token_in_the_conf_is_refused_before_the_run_exists(sim, run_dag, chaos_env) -> None:
    from airflow.sdk.definitions.param import ParamValidationError
    from airflow.utils.session import create_session

    from tiktok_sim.testing import token_fingerprint

    pasted = sim.get_tokens(sim.admin.create_account(videos=1)["open_id"])
    sim.admin.reset_stats()
    with pytest.raises(ParamValidationError, match="refresh_token"):
        run_dag("tiktok_connect_account", refresh_token=pasted.refresh_token)
    with create_session() as session:
        confs = [c for (c,) in session.execute(text("SELECT CAST(conf AS TEXT) FROM dag_run")) if c]
    assert not [c for c in confs if pasted.refresh_token in c], "no run's configuration holds the token"
    assert token_calls(sim) == {}
    [issued] = [
        t for t in sim.admin.tokens(pasted.open_id) if t["fingerprint"] == token_fingerprint(pasted.refresh_token)
    ]
    assert issued["status"] == "active", "refused without spending it: it still works from a Variable"


# -- item 9: the refresh survives its database session dying ------------------------------------


def kill_role_sessions_when_the_token_call_is_in_flight(sim: Any, role: str) -> tuple[threading.Thread, list[int]]:
    """Once the simulator holds the (slow) token request, terminate every warehouse session of the DAG role."""
    killed: list[int] = []

    def kill() -> None:
        deadline = time.monotonic() + 60
        while sim.admin.faults()["oauth_token"]["next"] and time.monotonic() < deadline:
            time.sleep(0.01)
        conn = psycopg2.connect(f"{SETTINGS.pg_server}/{SETTINGS.warehouse_db}")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND usename = %s",
                    (SETTINGS.warehouse_db, role),
                )
                killed.append(len(cur.fetchall()))
        finally:
            conn.close()

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread, killed


def test_a_dag_run_whose_refresh_loses_its_session_still_ends_with_a_working_token(
    sim, run_dag, connect, tiktok_extra, dag_role, clean_warehouse
) -> None:
    open_id = connect(videos=5)
    before = rows(clean_warehouse, "SELECT refresh_token_enc FROM tiktok.accounts WHERE open_id = :o", o=open_id)
    sim.admin.expire_access_tokens(open_id)
    with clean_warehouse.begin() as conn:
        conn.execute(text("UPDATE tiktok.accounts SET access_expires_at = now() WHERE open_id = :o"), {"o": open_id})
    # The token answer takes 2 s (under the read timeout: TikTok's answer arrives, rotated token and all).
    tiktok_extra(read_timeout=10.0)
    sim.admin.set_faults("oauth_token", queue=[("slow", 1)], slow_seconds=2.0)
    sim.admin.reset_stats()
    killer, killed = kill_role_sessions_when_the_token_call_is_in_flight(sim, dag_role["role"])
    try:
        run = run_dag("tiktok_profile_snapshot", accounts=[open_id])
    finally:
        killer.join(60)
    assert killed and killed[0] >= 1, "the DAG role's warehouse session was killed mid-refresh"
    assert str(run.state) == "success", states(run)
    assert token_calls(sim)["refresh_token"] == {"ok": 1}
    assert accounts_of(clean_warehouse, open_id) == [("active",)]
    after = rows(clean_warehouse, "SELECT refresh_token_enc FROM tiktok.accounts WHERE open_id = :o", o=open_id)
    assert after != before

    from tiktok_pipeline.hooks import display_hook

    hook = display_hook()
    stored = hook.token_store.get(open_id)
    assert hook.refresh_grant(stored.refresh_token).open_id == open_id, "the stored refresh token works"


def test_six_processes_on_an_expired_token_refresh_it_once(sim, connect, clean_warehouse, tmp_path) -> None:
    open_id = connect(videos=3)
    sim.admin.expire_access_tokens(open_id)
    with clean_warehouse.begin() as conn:
        conn.execute(text("UPDATE tiktok.accounts SET access_expires_at = now() WHERE open_id = :o"), {"o": open_id})
    # A slow token endpoint: the other five pile up behind the lease holder meanwhile.
    sim.admin.set_faults("oauth_token", probabilities={"slow": 1.0}, slow_seconds=0.5)
    sim.admin.reset_stats()
    go = tmp_path / "go"
    children = [Child({"operator": "user_info", "kwargs": {"open_id": open_id}}, go_file=go) for _ in range(6)]
    for child in children:
        assert child.process.stdout.readline().startswith(b'{"ready"'), child.stderr
    go.touch()
    for child in children:
        assert child.wait(timeout=120) == 0, (child.stdout[-2000:], child.stderr[-3000:])
    assert token_calls(sim)["refresh_token"] == {"ok": 1}
    assert sum(child.outcome()["result"]["token_refreshes"] for child in children) == 1


def test_a_refresher_killed_mid_call_blocks_the_others_only_until_its_lease_ends(
    sim, connect, tiktok_extra, clean_warehouse, tmp_path
) -> None:
    """SIGKILL the lease holder while TikTok keeps it retrying (429s: nothing rotated); the next one takes over."""
    open_id = connect(videos=3)
    with clean_warehouse.begin() as conn:
        conn.execute(text("UPDATE tiktok.accounts SET access_expires_at = now() WHERE open_id = :o"), {"o": open_id})
    tiktok_extra(connect_timeout=0.5, read_timeout=0.5, refresh_lease_seconds=1, max_attempts=100_000)
    sim.admin.set_faults("oauth_token", queue=[("rate_limit", 100_000)])
    sim.admin.reset_stats()
    holder = Child({"operator": "user_info", "kwargs": {"open_id": open_id}})
    wait_until(lambda: sim.admin.stats()["endpoints"].get("oauth_token", {}).get("requests", 0) > 3, timeout=60)
    [(owner, lease_until)] = rows(
        clean_warehouse,
        "SELECT refresh_lease_owner, refresh_lease_until FROM tiktok.accounts WHERE open_id = :o",
        o=open_id,
    )
    assert owner and owner.split(":")[1] == str(holder.pid), "the child holds the lease"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(30)
    sim.admin.clear_faults()

    successor = Child({"operator": "user_info", "kwargs": {"open_id": open_id}})
    assert successor.wait(timeout=120) == 0, (successor.stdout[-2000:], successor.stderr[-3000:])
    [(db_now,)] = rows(clean_warehouse, "SELECT now()")
    assert db_now >= lease_until, "the successor waited for the dead holder's lease"
    assert (db_now - lease_until).total_seconds() < 20, "and not much longer"
    assert token_calls(sim)["refresh_token"].get("ok") == 1
    assert accounts_of(clean_warehouse, open_id) == [("active",)]
