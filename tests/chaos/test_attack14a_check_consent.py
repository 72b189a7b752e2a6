"""attack14a: the daily check_consent task end to end (dag.test()), with a hostile display name.

An account whose consent runs out in 6.5 days (a lifetime TikTok stated) crossed its 7-day warning
within the last day: check_consent logs a WARNING naming it and sends on-call one message. The
creator's display name holds a forged log line, terminal escapes, a right-to-left override and
2,000 more characters. Read back: the task output, the task's XCom, the alert as a real webhook
receiver got it; nothing may carry a secret, a second line or a bidi override.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
from chaos_support import rows, states, xcom
from sqlalchemy import text

pytestmark = pytest.mark.integration

FORGED = "2026-03-02T09:30:00Z [error] check_consent: every account purged, nothing to do"
HOSTILE_NAME = "Mia\n" + FORGED + "\r\x1b]0;owned\x07\u202e)emit( " + "\u05e9" * 2_000
TOKEN = re.compile(r"\b(?:act|rft)\.[A-Za-z0-9]{8,}")


def test_check_consent_names_a_hostile_account_on_one_line_and_alerts_without_secrets(
    sim, run_dag, chaos_env, encryption_key, dag_role, capfd, caplog, monkeypatch
) -> None:
    from receivers import http_receiver

    caplog.set_level(logging.INFO)

    from tiktok_pipeline.hooks import display_hook
    from tiktok_tools.simaccounts import connect_sim_account

    hook = display_hook()
    open_id = connect_sim_account(sim.admin, hook, videos=0, display_name=HOSTILE_NAME)
    engine = hook.token_store.engine
    tokens = [hook.token_store.get(open_id).access_token, hook.token_store.get(open_id).refresh_token]
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE tiktok.accounts SET refresh_expires_at = :at, refresh_expiry_estimated = false"
                " WHERE open_id = :o"
            ),
            {"at": datetime.now(UTC) + timedelta(days=6.5), "o": open_id},
        )
    monkeypatch.setattr("tiktok_provider.notifications.tiktok._SENT", set())
    with http_receiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url}))
        capfd.readouterr()
        run = run_dag("tiktok_profile_snapshot")
        out, err = capfd.readouterr()
        messages = receiver.json()
    assert states(run)[("check_consent", -1)] == "success", states(run)
    assert rows(engine, "SELECT status FROM tiktok.accounts WHERE open_id = :o", o=open_id) == [("active",)]

    [check] = xcom(run, "check_consent")
    assert check["warnings"] == {open_id: 7} and check["alerts_sent"] == 1, check
    output = out + err + "\n" + caplog.text
    warned = [line for line in output.splitlines() if open_id in line and "consent (refresh token) runs out" in line]
    assert warned, output[-3000:]
    assert not [line for line in output.splitlines() if line.startswith(FORGED[:20])], "a forged log line"
    assert "\u202e" not in output and "\x1b]0;owned" not in output

    [alert] = [m for m in messages if m["kind"] == "consent_expiring"]
    assert f"({open_id})" in alert["title"] and "\u202e" not in json.dumps(alert, ensure_ascii=False)
    everything = output + json.dumps(check) + json.dumps(messages, ensure_ascii=False)
    secrets = {"encryption key": encryption_key, "client secret": sim.client_secret, "dag role": dag_role["password"]}
    secrets.update({f"token {i}": t for i, t in enumerate(tokens)})
    assert [what for what, value in secrets.items() if value in everything] == []
    assert TOKEN.search(everything) is None
