"""The alert digest's pure parts: the message, the setting, and when a failure may wait for it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tiktok_pipeline.alert_digest import DIGEST_ACCOUNTS, alerts_per_run, digest_alert, digest_to_run


def failure(account: str, error: str) -> dict[str, Any]:
    return {"kind": "task_failed", "facts": {"Account": account, "Error": error, "Task": "snapshot_profile [3]"}}


def test_the_digest_groups_by_error_names_the_accounts_and_links_the_run() -> None:
    folded = [failure(f"Ana {i} (open-{i})", "TikTokServerError internal_error HTTP 500") for i in range(40)]
    folded += [failure("Bo <script> (open-x)", "TikTokRateLimited rate_limit_exceeded HTTP 429")]
    alert = digest_alert("tiktok_profile_snapshot", "scheduled__2026-12-06", folded, sent_alone=5)
    assert alert.title == "TikTok: 41 more account tasks failed in tiktok_profile_snapshot (run scheduled__2026-12-06)"
    assert alert.facts["By error"].startswith("TikTokServerError internal_error HTTP 500 (x40); TikTokRateLimited")
    assert alert.facts["Sent one by one before"] == "5" and alert.facts["In this digest"] == "41"
    assert "Ana 0 (open-0)" in alert.facts["Accounts"] and f"and {41 - DIGEST_ACCOUNTS} more" in alert.facts["Accounts"]
    assert alert.url.endswith("/dags/tiktok_profile_snapshot/runs/scheduled__2026-12-06")
    assert "clear the run's failed tasks" in alert.next_step


def test_alerts_per_run_is_a_bounded_whole_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__TIKTOK__ALERTS_PER_RUN", raising=False)
    assert alerts_per_run() == 5
    monkeypatch.setenv("AIRFLOW__TIKTOK__ALERTS_PER_RUN", "0")
    assert alerts_per_run() == 0
    for bad in ("-1", "five", "10001"):
        monkeypatch.setenv("AIRFLOW__TIKTOK__ALERTS_PER_RUN", bad)
        with pytest.raises(ValueError, match=r"\[tiktok\] alerts_per_run"):
            alerts_per_run()


class FakeTI(SimpleNamespace):
    def get_task_states(self, **kwargs: Any) -> Any:
        assert kwargs == {"dag_id": "d", "task_ids": ["alert_digest"], "run_ids": ["r"]}
        if isinstance(self.states, Exception):
            raise self.states
        return self.states


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({"r": {"alert_digest": None}}, True),  # not scheduled yet: it will run
        ({"r": {"alert_digest": "up_for_retry"}}, True),
        ({"r": {"alert_digest": "success"}}, False),  # ran already (only the failed tasks were cleared)
        ({"r": {"alert_digest": "running"}}, False),  # may have read the outbox already
        ({"r": {}}, False),  # a DAG without a digest
        ({}, False),
        (RuntimeError("no API"), False),
    ],
)
def test_a_failure_waits_for_the_digest_only_while_it_is_still_to_run(states: Any, expected: bool) -> None:
    assert digest_to_run({"ti": FakeTI(dag_id="d", run_id="r", states=states)}) is expected
