"""A batch task's tries in processes of their own, as a worker runs them: what on-call hears."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chaos_support import Child

pytestmark = pytest.mark.integration


def test_a_batch_retried_for_another_account_tells_on_call_about_a_revoked_one_once(sim, connect, chaos_env) -> None:
    """Each try is a new process, so only what the warehouse says (already marked) can keep the alert to one."""
    from receivers import http_receiver

    revoked, flaky = connect(videos=1), connect(videos=1)
    sim.admin.revoke(revoked)
    # The revoked account's call goes through (401, then its refresh is refused); every later user/info fails.
    sim.admin.set_faults("user_info", queue=[("pass", 1)], probabilities={"internal_error": 1.0})
    batch = [{"open_id": revoked, "account_name": "Revoked"}, {"open_id": flaky, "account_name": "Flaky"}]
    spec: dict[str, Any] = {"operator": "user_info", "kwargs": {"accounts": batch, "account_name": "accounts 1-2 of 2"}}
    with http_receiver() as receiver:
        alerts = {"AIRFLOW_CONN_TIKTOK_ALERTS": json.dumps({"conn_type": "http", "host": receiver.url})}
        for _try in range(2):  # the first try and Airflow's retry (the flaky account's 500s are retryable)
            child = Child(spec, env=alerts)
            assert child.wait() == 1, child.stdout[-2000:] + child.stderr[-2000:]
            assert "2 of 2 accounts failed" in child.outcome()["error"]
        messages = receiver.json()
    reconnects = [m["facts"]["open_id"] for m in messages if m["kind"] == "reconnect_needed"]
    assert reconnects == [revoked], messages
