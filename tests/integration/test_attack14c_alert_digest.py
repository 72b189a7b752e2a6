"""The alert digest under attack: no failure alert is lost, and a digest is never taken for another.

Real Postgres (the test warehouse) and a real HTTP receiver; the notifier runs as Airflow calls it,
with a failure context. The one stand-in is the task-instance API (``ti.get_task_states``): these
tests decide what Airflow answers about the run's ``alert_digest`` task, and when.
"""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from receivers import http_receiver
from sqlalchemy import text

from tiktok_pipeline.alert_digest import RunAlertNotifier, send_digest
from tiktok_provider.notifications import tiktok as notifications

DAG_ID = "tiktok_profile_snapshot"
RUN_ID = "manual__2026-12-06T03:00:00+00:00"


class TaskInstance(SimpleNamespace):
    """What a failure callback's ``ti`` offers; ``digest_state`` is what Airflow says of alert_digest."""

    def get_task_states(self, **kwargs: Any) -> Any:
        state = self.digest_state() if callable(self.digest_state) else self.digest_state
        return {self.run_id: {"alert_digest": state}}


def context(map_index: int, *, try_number: int = 1, digest_state: Any = None) -> dict[str, Any]:
    ti = TaskInstance(
        dag_id=DAG_ID,
        run_id=RUN_ID,
        task_id="snapshot_profile",
        map_index=map_index,
        try_number=try_number,
        digest_state=digest_state,
    )
    task = SimpleNamespace(
        task_id="snapshot_profile", open_id=f"open-{map_index}", account_name=f"Creator {map_index}", doc_md=""
    )
    error = RuntimeError(f"TikTok /v2/user/info/ call for account open-{map_index} failed: internal_error (HTTP 500)")
    return {"ti": ti, "task": task, "exception": error}


@pytest.fixture
def alerts(tiktok_connections: Any, clean_warehouse: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Send alerts to ``url`` (``alerts.to(url)``), one per run's failure before folding; a fresh process."""
    monkeypatch.setenv("AIRFLOW__TIKTOK__ALERTS_PER_RUN", "1")
    monkeypatch.setattr(notifications, "_SENT", set())

    def to(url: str) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_ALERTS", json.dumps({"conn_type": "http", "host": url}))

    return SimpleNamespace(to=to, engine=clean_warehouse)


def notifications_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_a_failure_whose_own_alert_the_destination_refused_reaches_on_call_in_the_digest(alerts: Any) -> None:
    """A webhook that answers 5xx for the first failure's own message: that failure must still reach on-call.

    Before: the failure was recorded as "sent one by one" (not folded), so the digest left it out and
    counted it among those sent; no message ever named the account.
    """
    with http_receiver(status=503) as down, http_receiver() as up:
        alerts.to(down.url)
        with pytest.raises(notifications.AlertNotSent):
            RunAlertNotifier().notify(context(0))
        assert len(down.requests) == 1  # tried, refused
        alerts.to(up.url)
        for i in (1, 2):
            RunAlertNotifier().notify(context(i))
        assert up.requests == []  # folded: past alerts_per_run (1)
        send_digest(alerts.engine, dag_id=DAG_ID, run_id=RUN_ID, now=notifications_now())
        [message] = up.json()
    assert message["kind"] == "run_failures"
    for i in range(3):
        assert f"open-{i}" in message["facts"]["Accounts"], message
    assert message["facts"]["In this digest"] == "3"
    assert message["facts"]["Sent one by one before"] == "0"  # none reached on-call alone
    assert message["facts"]["Of them, refused when sent one by one"] == "1"
    with alerts.engine.connect() as conn:
        # every failure, the refused one included, is now recorded as sent
        assert conn.execute(text("SELECT count(*) FROM tiktok.alert_outbox WHERE sent_at IS NULL")).scalar() == 0


def _waiting_for_advisory_lock(engine: Any) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).scalar()
        )


def test_a_late_failure_callback_racing_the_digest_is_never_folded_after_the_digest_read(alerts: Any) -> None:
    """The DAG processor runs the failure callback of a task whose worker died after the task is failed:
    the digest may start meanwhile. Airflow says "queued"; by the time the failure is recorded, the
    digest must not have read the outbox already, else the failure is folded and never sent.

    Before: the state was asked before the run's lock was taken, so this interleaving (asked: queued;
    the digest runs to its end; the failure is folded) lost the alert.
    """
    with http_receiver() as receiver:
        alerts.to(receiver.url)
        RunAlertNotifier().notify(context(0))  # the first one, sent alone
        assert len(receiver.requests) == 1

        digest_done = threading.Event()
        result: dict[str, Any] = {}

        def run_digest() -> None:
            result.update(send_digest(alerts.engine, dag_id=DAG_ID, run_id=RUN_ID, now=notifications_now()))
            digest_done.set()

        def airflow_answers() -> str:
            # The scheduler starts the digest now; Airflow still answers "queued" to this callback.
            thread = threading.Thread(target=run_digest, daemon=True)
            thread.start()
            # Either the digest finishes (it read the outbox before this failure is recorded: the
            # bug) or it waits for the run's lock, which the notifier holds while it asks.
            while not digest_done.is_set() and not _waiting_for_advisory_lock(alerts.engine):
                digest_done.wait(0.05)
            return "queued"

        RunAlertNotifier().notify(context(1, digest_state=airflow_answers))
        assert digest_done.wait(30), "the digest never finished"
        messages = receiver.json()
    named = [m for m in messages if "open-1" in json.dumps(m)]
    assert len(named) == 1, f"the failure of open-1 reached on-call {len(named)} times: {messages}"
    with alerts.engine.connect() as conn:
        unsent = conn.execute(
            text("SELECT count(*) FROM tiktok.alert_outbox WHERE kind = 'task_failed' AND sent_at IS NULL")
        ).scalar()
    assert unsent == 0


def test_a_run_cleared_again_gets_its_own_digest_even_with_as_many_failures(alerts: Any) -> None:
    """Two digests of one run (the run cleared in between) with the same number of failures carry
    different failures: they must not share a dedupe_key, or a receiver that deduplicates (and
    deliver() in the same process: dag.test()) drops the second.
    """
    with http_receiver() as receiver:
        alerts.to(receiver.url)
        for i in range(3):  # 1 alone, 2 folded
            RunAlertNotifier().notify(context(i))
        send_digest(alerts.engine, dag_id=DAG_ID, run_id=RUN_ID, now=notifications_now())
        # The whole run is cleared: two of the accounts fail again (their second try); the digest too.
        for i in (1, 2):
            RunAlertNotifier().notify(context(i, try_number=2))
        second = send_digest(alerts.engine, dag_id=DAG_ID, run_id=RUN_ID, now=notifications_now())
        digests = [m for m in receiver.json() if m["kind"] == "run_failures"]
    assert second["digest_sent"] is True, second
    assert len(digests) == 2, digests
    assert digests[0]["dedupe_key"] != digests[1]["dedupe_key"]
    # A retry of the same digest (nothing new) keeps its key: a receiver may drop the repeat.
    with alerts.engine.begin() as conn:
        conn.execute(text("UPDATE tiktok.alert_outbox SET sent_at = NULL WHERE alert->>'dedupe_key' LIKE '%|2'"))
    from tiktok_pipeline.alert_digest import digest_alert

    with alerts.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT alert FROM tiktok.alert_outbox WHERE kind = 'task_failed' AND sent_at IS NULL")
        ).scalars()
        folded = list(rows)
    again = digest_alert(DAG_ID, RUN_ID, folded, sent_alone=1)
    assert again.dedupe_key == digests[1]["dedupe_key"]
