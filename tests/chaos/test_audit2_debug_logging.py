"""Audit 2, item 7: with DEBUG logging, dag.test() must still print no secret.

Airflow's in-process comms (the Task SDK's supervisor) log every message at DEBUG, the values
handed to ``mask_secret`` included -- before the masker knows them. Our entry points that run
dag.test() pin those loggers to INFO (``tiktok_ops.settings.apply``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from chaos_support import ROOT
from test_chaos_secrets import DAG_CHILD, TOKEN, fingerprint, issued_tokens

pytestmark = pytest.mark.integration


def test_a_dag_run_under_debug_logging_prints_no_secret(
    sim, connect, encryption_key, clean_warehouse, tmp_path
) -> None:
    from tiktok_pipeline.hooks import display_hook

    store = display_hook().token_store
    account = connect(videos=3)
    before = store.get(account)
    sim.admin.expire_access_tokens(account)  # the run refreshes: new tokens pass through mask_secret
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins")]),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(tmp_path / "logs"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG",
    }
    child = subprocess.run(
        [sys.executable, str(DAG_CHILD), json.dumps([["tiktok_profile_snapshot", {}]])],
        capture_output=True,
        env=env,
        timeout=600,
        cwd=ROOT,
    )
    output = child.stdout.decode("utf-8", "replace") + child.stderr.decode("utf-8", "replace")
    assert child.returncode == 0, output[-5000:]
    assert "[debug" in output, "DEBUG logging is on (for the named loggers)"
    after = store.get(account)
    assert after.refresh_token != before.refresh_token, "the run refreshed"
    literals = {
        "client secret": sim.client_secret,
        "token encryption key": encryption_key,
        "old access token": before.access_token,
        "old refresh token": before.refresh_token,
        "new access token": after.access_token,
        "new refresh token": after.refresh_token,
    }
    issued = issued_tokens(sim)
    hits = [name for name, value in literals.items() if value in output]
    hits += [
        f"issued {issued[fingerprint(t)]['kind']} token" for t in TOKEN.findall(output) if fingerprint(t) in issued
    ]
    values = [*literals.values(), *TOKEN.findall(output)]
    where = sorted({redact(line, values)[:160] for line in output.splitlines() if any(v in line for v in values)})
    assert hits == [], (hits, where[:10])


def redact(line: str, values: list[str]) -> str:
    for value in values:
        line = line.replace(value, "[SECRET]")
    return line
