"""Secrets: run every DAG (connect three ways, refresh, fail), then look for every secret everywhere.

Where: the DAG process's whole output (a fresh process, so no earlier test's masking hides
anything), Airflow's log folder, XComs, rendered template fields, exception texts, and a pg_dump of
both databases (bytea columns decoded too). What: the client secret, the token encryption key, the
DAG role's password, and every access and refresh token the simulator ever issued -- found by
shape and checked against the simulator's fingerprints, so tokens we never saw are covered too.

A run's configuration (dag_run.conf) never holds a token: the connect DAG takes a refresh token
through a Variable, and refuses one in the conf at trigger time (tests/chaos/test_chaos_token_loss.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from chaos_support import ROOT, SETTINGS, rows, run_inline

pytestmark = pytest.mark.integration

TOKEN = re.compile(r"(?:act|rft)\.[A-Za-z0-9]{20,}")
BYTEA = re.compile(r"\\\\?x([0-9a-f]{32,})")
DAG_CHILD = Path(__file__).with_name("dag_child.py")


def fingerprint(token: str) -> str:
    from tiktok_sim.testing import token_fingerprint

    return token_fingerprint(token)


def issued_tokens(sim: Any) -> dict[str, dict[str, Any]]:
    """Every token the simulator issued this session, by fingerprint (kind, status)."""
    return {
        token["fingerprint"]: token
        for account in sim.admin.accounts()
        for token in sim.admin.tokens(account["open_id"])
    }


def pg_dump(database: str, *exclude_data: str) -> str:
    args = ["pg_dump", "--no-owner", f"{SETTINGS.pg_server}/{database}"]
    args += [f"--exclude-table-data={table}" for table in exclude_data]
    text = subprocess.run(args, check=True, capture_output=True, timeout=120).stdout.decode("utf-8", "replace")
    # bytea columns are dumped as hex: decode them, so a token stored as bytes is found as well
    decoded = [bytes.fromhex(h[: len(h) // 2 * 2]).decode("latin-1") for h in BYTEA.findall(text)]
    return text + "\n".join(decoded)


def set_variable(key: str, value: str) -> None:
    # The ORM model, not airflow.sdk.Variable: the test writes Airflow's metadata DB as an admin would.
    from airflow.models import Variable

    Variable.set(key, value)  # noqa: AIR311


def variable_exists(key: str) -> bool:
    from airflow.models import Variable

    return Variable.get(key, default_var=None) is not None  # noqa: AIR311


def metadata_rows(query: str, **params: Any) -> list[tuple]:
    from airflow.utils.session import create_session
    from sqlalchemy import text

    with create_session() as session:
        return [tuple(r) for r in session.execute(text(query), params)]


def test_no_secret_reaches_logs_xcoms_rendered_fields_errors_or_either_database(
    sim, connect, encryption_key, dag_role, clean_warehouse, tmp_path
) -> None:
    from tiktok_pipeline.hooks import display_hook
    from tiktok_sim.testing import DEFAULT_REDIRECT_URI

    store = display_hook().token_store
    refreshed = connect(videos=40)  # its access token dies at TikTok: the snapshot refreshes it
    revoked = connect(videos=5)  # its owner withdrew the app: tasks fail with reauth errors
    originals = [store.get(refreshed), store.get(revoked)]
    sim.admin.expire_access_tokens(refreshed)
    sim.admin.revoke(revoked)
    by_code = sim.admin.create_account(videos=5)["open_id"]
    code = sim.admin.mint_code(by_code)
    by_variable = sim.admin.create_account(videos=5)["open_id"]
    imported = sim.get_tokens(by_variable)
    set_variable("tiktok_refresh_token_chaos_ok", imported.refresh_token)
    failing = sim.admin.create_account(videos=5)["open_id"]
    stranded = sim.get_tokens(failing)
    set_variable("tiktok_refresh_token_chaos_down", stranded.refresh_token)
    # TikTok's token endpoint is down for every try of the first connect run (3 tries x 10 attempts).
    sim.admin.set_faults("oauth_token", queue=[("internal_error", 30)])
    sim.admin.set_faults("video_query", queue=[("pass", 1), ("missing_data", 1)])  # one error with a log_id
    runs = [
        ("tiktok_connect_account", {"refresh_token_variable": "tiktok_refresh_token_chaos_down"}),
        ("tiktok_connect_account", {"auth_code": code, "redirect_uri": DEFAULT_REDIRECT_URI}),
        ("tiktok_connect_account", {"refresh_token_variable": "tiktok_refresh_token_chaos_ok"}),
        ("tiktok_profile_snapshot", {}),
        ("tiktok_video_backfill", {"mode": "full"}),
        ("tiktok_cover_refresh", {"horizon_minutes": 7 * 60}),
    ]
    logs = tmp_path / "logs"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins")]),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(logs),
    }
    child = subprocess.run(
        [sys.executable, str(DAG_CHILD), json.dumps(runs)], capture_output=True, env=env, timeout=600, cwd=ROOT
    )
    output = child.stdout.decode("utf-8", "replace") + child.stderr.decode("utf-8", "replace")
    assert child.returncode == 0, output[-5000:]
    results = json.loads(child.stdout.decode().strip().splitlines()[-1])
    states = [r["state"] for r in results["result"]]
    # the revoked account fails the snapshot, is then reauth_required and left out of later runs
    assert states == ["failed", "success", "success", "failed", "success", "failed"], states
    assert "Refreshing the access token" in output, "the output under test includes a refresh"
    assert "reauth_required" in output and "log_id=" in output, "and errors"
    assert not variable_exists("tiktok_refresh_token_chaos_ok"), "a rotated token's Variable is deleted"
    assert variable_exists("tiktok_refresh_token_chaos_down"), "a token that could not be rotated stays put"

    # Exception texts, as raised (with tracebacks) by the operators for the revoked account.
    errors = []
    for spec in (
        {"operator": "user_info", "kwargs": {"open_id": revoked}},
        {"operator": "video_list", "kwargs": {"open_id": revoked, "mode": "full"}},
    ):
        with pytest.raises(AirflowFailException) as excinfo:
            run_inline(spec)
        errors.append("".join(traceback.format_exception(excinfo.value)) + repr(excinfo.value))

    run_ids = [r["run_id"] for r in results["result"]]
    xcoms = [json.dumps(v, default=str) for r in results["result"] for v in xcom_values(r)]
    rendered = metadata_rows(
        "SELECT CAST(rendered_fields AS TEXT), CAST(k8s_pod_yaml AS TEXT) FROM rendered_task_instance_fields"
        " WHERE run_id = ANY(:ids)",
        ids=run_ids,
    )
    assert rendered, "rendered fields were written"
    log_files = [p for folder in (logs, SETTINGS.airflow_home / "logs") if folder.exists() for p in folder.rglob("*")]
    artifacts = {
        "task output": output,
        "log files": "\n".join(p.read_text(errors="replace") for p in log_files if p.is_file()),
        "xcoms": "\n".join(xcoms),
        "rendered fields": "\n".join(str(r) for r in rendered),
        "exception texts": "\n".join(errors),
        "account status reasons": str(rows(clean_warehouse, "SELECT status_reason FROM tiktok.accounts")),
        "pg_dump airflow": pg_dump(SETTINGS.airflow_db, "dag_run"),
        "pg_dump warehouse": pg_dump(SETTINGS.warehouse_db),
    }

    live_tokens = [
        t
        for tokens in ([store.get(o) for o in (refreshed, by_code, by_variable)])
        for t in (tokens.access_token, tokens.refresh_token)
    ]
    literals = {
        "client secret": sim.client_secret,
        "token encryption key": encryption_key,
        "DAG role password": dag_role["password"],
        "token stranded in a Variable": stranded.refresh_token,
        **{f"token {i}": t for i, t in enumerate(live_tokens)},
        **{f"old token {i}": t for i, o in enumerate(originals) for t in (o.access_token, o.refresh_token)},
        "imported token": imported.access_token,
    }
    issued = issued_tokens(sim)
    hits = []
    for where, text in artifacts.items():
        hits += [f"{name} in {where}" for name, value in literals.items() if value in text]
        hits += [
            f"issued {issued[fingerprint(t)]['kind']} token in {where}"
            for t in TOKEN.findall(text)
            if fingerprint(t) in issued
        ]
    assert hits == []

    # The runs' configurations hold no token (used codes are single-use anyway).
    confs = metadata_rows("SELECT CAST(conf AS TEXT) FROM dag_run WHERE run_id = ANY(:ids)", ids=run_ids)
    assert [t for (conf,) in confs for t in TOKEN.findall(conf or "")] == []
    assert stranded.refresh_token not in "".join(c for (c,) in confs), "the stranded token is not in any conf"

    scanned = sum(len(text) for text in artifacts.values())
    print(
        f"\nCHAOS secrets: {len(literals)} secret values and {len(issued)} issued tokens (by fingerprint) "
        f"searched in {len(artifacts)} places ({scanned / 1e6:.1f} MB): 0 hits"
    )


def xcom_values(result: dict[str, str]) -> list[Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        found = session.query(XComModel).filter_by(dag_id=result["dag_id"], run_id=result["run_id"]).all()
        return [XComModel.deserialize_value(r) for r in found]


def test_a_bearer_token_never_goes_over_plain_http_to_a_remote_host(
    sim, run_dag, connect, tiktok_extra, clean_warehouse, capfd
) -> None:
    """End to end: the connection points at a remote http:// host; every task fails at once, sending nothing."""
    from chaos_support import states, tries

    open_id = connect(videos=3)
    with clean_warehouse.begin() as conn:  # the token is due: the hook would refresh (sending the client secret)
        conn.exec_driver_sql("UPDATE tiktok.accounts SET access_expires_at = now()")
    tiktok_extra()
    env = json.loads(os.environ["AIRFLOW_CONN_TIKTOK_DEFAULT"])
    os.environ["AIRFLOW_CONN_TIKTOK_DEFAULT"] = json.dumps({**env, "host": "http://api.tiktok.invalid"})
    sim.admin.reset_stats()
    run = run_dag("tiktok_profile_snapshot")
    assert states(run)[("snapshot_profile", 0)] == "failed"
    assert tries(run)[("snapshot_profile", 0)] == 1, "a configuration error is not retried"
    out, err = capfd.readouterr()
    assert "refusing to send a bearer token over http:// to api.tiktok.invalid" in out + err
    assert sim.admin.stats()["total"] == 0
    assert rows(clean_warehouse, "SELECT status FROM tiktok.accounts WHERE open_id = :o", o=open_id) == [("active",)]
