"""One digest instead of an alert storm: a run's account-task failures past the first few.

Up to ``[tiktok] batch_accounts_above`` (500) accounts run as one task each, and a TikTok outage
fails them all: one message per account is a storm nobody reads at 3 a.m. So, per DAG run:

- the first ``[tiktok] alerts_per_run`` failures (default 5) are sent one by one, as before;
- the next ones are recorded in ``tiktok.alert_outbox`` ("folded") and the task log says so;
- the run's ``alert_digest`` task (trigger rule ``all_done``: it runs whatever failed) sends one
  message for all of them: how many, grouped by error (an outage shows as one error, 480 times), the
  accounts, and the link to the run.

A failure is folded only while the run's ``alert_digest`` is still to run (Airflow says so): after it
(on-call cleared only the failed tasks), or in a DAG without one, every failure is sent at once, so
nothing waits for a digest that will not come. Clearing the whole run clears the digest too, and
folding resumes. Airflow reports a failed task's state only after its failure callback has returned,
so the digest cannot start before the last failure is recorded.

Nothing is lost on the way: when the warehouse cannot record a failure, it is sent at once; a failure
whose own message the destination refused (it was not folded) goes into the digest; when the
digest cannot be sent, its task fails (and retries) with the failures still recorded as unsent. The
messages are built exactly as single alerts are (:func:`failure_alert`, secrets scrubbed) before
they are recorded. ``alerts_per_run = 0`` turns folding off.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from tiktok_provider.notifications.tiktok import (
    ALERTS_CONN_ID,
    TIKTOK_CONN_ID,
    Alert,
    TikTokAlertNotifier,
    dag_run_url,
    deliver,
    failure_alert,
    known_secrets,
)

log = logging.getLogger(__name__)

ALERTS_PER_RUN_OPTION = "alerts_per_run"
DEFAULT_ALERTS_PER_RUN = 5
#: Accounts named one by one in a digest; the rest are counted.
DIGEST_ACCOUNTS = 30
DIGEST_TASK_ID = "alert_digest"


def alerts_per_run() -> int:
    """``[tiktok] alerts_per_run``: failures of a run sent one by one before folding (0: never fold)."""
    from airflow.configuration import conf

    raw = (conf.get("tiktok", ALERTS_PER_RUN_OPTION, fallback="") or "").strip()
    try:
        value = int(raw) if raw else DEFAULT_ALERTS_PER_RUN
    except ValueError:
        value = -1
    if not 0 <= value <= 10_000:
        raise ValueError(f"[tiktok] {ALERTS_PER_RUN_OPTION} must be a whole number from 0 to 10000, got {raw!r}")
    return value


def _run_lock(conn: Any, dag_id: str, run_id: str) -> None:
    """Serialise the run's notifiers and its digest (a transaction-scoped advisory lock)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 7))"), {"k": f"alerts|{dag_id}|{run_id}"})


#: States of the run's alert_digest task in which it will still run (None: not scheduled yet).
DIGEST_TO_RUN = frozenset({None, "none", "scheduled", "queued", "up_for_retry", "up_for_reschedule", "deferred"})


def digest_to_run(context: Any) -> bool:
    """Whether this run has an ``alert_digest`` task that has not run yet (asked of Airflow)."""
    ti = context.get("ti") or context.get("task_instance")
    try:
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=[DIGEST_TASK_ID], run_ids=[ti.run_id])
    except Exception as exc:  # an older Airflow, no API: send at once
        log.info("Could not ask Airflow for the state of %s (%s); sending the alert now", DIGEST_TASK_ID, exc)
        return False
    run = (states or {}).get(ti.run_id) or {}
    if DIGEST_TASK_ID not in run:
        return False  # this DAG has no digest
    state = run[DIGEST_TASK_ID]
    return (getattr(state, "value", state) if state is not None else None) in DIGEST_TO_RUN


def register(
    engine: Any,
    alert: Alert,
    *,
    dag_id: str,
    run_id: str,
    limit: int,
    digest_pending: bool | Callable[[], bool],
    now: datetime,
    send: Callable[[], bool] | None = None,
) -> bool:
    """Record a failure message of the run; return whether it goes out on its own (False: the digest
    sends it, or it went out already).

    :param send: sends the alert, returning whether it went out; called while the run's lock is held,
        so a digest reading the outbox meanwhile waits for it instead of sending it too, and recorded as
        sent in the same transaction. If it raises, the failure stays recorded as unsent (the digest
        sends it) and the error is raised. A crash before the commit sends it again (at least once).

    :param digest_pending: whether the run's digest is still to run; a callable is asked while the
        run's lock is held. It must be: a failure callback Airflow runs after the task's state is
        already ``failed`` (a task whose worker died: the DAG processor runs it) races the digest,
        and a digest found "queued" before the lock may read the outbox before this failure is
        recorded, and never send it. Asked under the lock, a digest that is still queued cannot
        read before this commits, and one that read already is "running" or done.
    """
    with engine.begin() as conn:
        _run_lock(conn, dag_id, run_id)
        sent = conn.execute(
            text(
                "SELECT count(*) FROM tiktok.alert_outbox WHERE dag_id = :d AND run_id = :r"
                " AND kind = 'task_failed' AND NOT folded AND dedupe_key <> :k"
            ),
            {"d": dag_id, "r": run_id, "k": alert.dedupe_key},
        ).scalar()
        fold = sent >= limit and (digest_pending() if callable(digest_pending) else digest_pending)
        # The key names the task instance and its try: the same key again is the same failure, its
        # callback run twice (a worker that died after sending). Once sent, it is never sent again.
        recorded = conn.execute(
            text(
                "INSERT INTO tiktok.alert_outbox (dedupe_key, dag_id, run_id, kind, alert, folded, created_at)"
                " VALUES (:k, :d, :r, 'task_failed', CAST(:a AS jsonb), :f, :now)"
                " ON CONFLICT (dedupe_key) DO UPDATE SET alert = EXCLUDED.alert, folded = EXCLUDED.folded"
                " WHERE tiktok.alert_outbox.sent_at IS NULL RETURNING 1"
            ),
            {"k": alert.dedupe_key, "d": dag_id, "r": run_id, "a": _json(alert), "f": fold, "now": now},
        ).scalar()
        if recorded is None:
            log.info("The alert %s went out already; not sent again", alert.dedupe_key)
            return False
        if fold or send is None:
            return not fold
        try:
            went_out = send()
        except Exception as exc:
            refused = exc  # recorded unsent (committed below): the digest sends it
        else:
            refused = None
            if went_out:
                _set_sent(conn, [alert.dedupe_key], now)
    if refused is not None:
        raise refused
    return True


def _json(alert: Alert) -> str:
    import json

    return json.dumps(alert.as_json(), ensure_ascii=False)


class RunAlertNotifier(TikTokAlertNotifier):
    """:class:`TikTokAlertNotifier` for per-account tasks: past ``alerts_per_run`` failures in a run,
    a failure is folded into the run's digest instead of sent (see the module's docstring)."""

    def notify(self, context: Any) -> None:
        alert = failure_alert(context, secrets=known_secrets(self.tiktok_conn_id))
        facts = alert.facts
        tried: list[bool] = []

        def send() -> bool:
            tried.append(True)
            return deliver(alert, self.alerts_conn_id)

        try:
            limit = alerts_per_run()
            alone = limit == 0 or register(
                _engine(self.tiktok_conn_id),
                alert,
                dag_id=facts["DAG"],
                run_id=facts["Run"],
                limit=limit,
                digest_pending=lambda: digest_to_run(context),
                now=datetime.now(UTC),
                send=send,
            )
        except Exception as exc:
            if tried:  # the destination refused (the outbox keeps it for the digest, when it could)
                raise
            # Never lose an alert to the bookkeeping.
            log.warning("Could not record the alert in tiktok.alert_outbox (%s); sending it now", type(exc).__name__)
            alone = True
        if alone and not tried:  # folding off, or the outbox could not be reached
            send()
        elif not alone:
            log.warning(
                "%s: more than %d account tasks of this run failed, so this failure goes into the run's "
                "alert digest (task %s) instead of a message of its own",
                alert.title,
                limit,
                DIGEST_TASK_ID,
            )


def _engine(tiktok_conn_id: str) -> Any:
    from tiktok_pipeline.hooks import display_hook
    from tiktok_warehouse.db import get_engine

    return get_engine(display_hook(tiktok_conn_id).config.warehouse_conn_id)


def _set_sent(conn: Any, keys: list[str], now: datetime) -> None:
    """Record that the failure messages ``keys`` reached the alert destination."""
    conn.execute(
        text("UPDATE tiktok.alert_outbox SET sent_at = :now WHERE dedupe_key = ANY(:k)"), {"now": now, "k": keys}
    )


def digest_alert(
    dag_id: str,
    run_id: str,
    folded: list[dict[str, Any]],
    sent_alone: int,
    *,
    not_sent_alone: int = 0,
    leftover: bool = False,
) -> Alert:
    """The one message for the ``folded`` failure messages of a run (each an ``Alert.as_json()``).

    :param not_sent_alone: how many of ``folded`` were to go out one by one, but the destination
        refused them then (they are here so that they still reach on-call).
    """
    errors = Counter(str((a.get("facts") or {}).get("Error") or "unknown error") for a in folded)
    accounts = [str((a.get("facts") or {}).get("Account") or (a.get("facts") or {}).get("Task") or "?") for a in folded]
    named = "; ".join(accounts[:DIGEST_ACCOUNTS])
    if len(accounts) > DIGEST_ACCOUNTS:
        named += f"; and {len(accounts) - DIGEST_ACCOUNTS} more"
    return Alert(
        kind="run_failures",
        title=(
            f"TikTok: {len(folded)} account task failures of {dag_id} (run {run_id}) were never sent: "
            "that run's alert_digest did not run (the run was marked failed or stopped)"
            if leftover
            else f"TikTok: {len(folded)} more account tasks failed in {dag_id} (run {run_id})"
        ),
        facts={
            "DAG": dag_id,
            "Run": run_id,
            "Sent one by one before": str(sent_alone),
            "In this digest": str(len(folded)),
            "Of them, refused when sent one by one": str(not_sent_alone) if not_sent_alone else "",
            "By error": "; ".join(f"{error} (x{n})" for error, n in errors.most_common(10)),
            "Accounts": named,
        },
        next_step="When one error accounts for most of them (By error), it is one cause (an outage, a revoked "
        "app, the rate limit): fix that, then clear the run's failed tasks; each redoes only its own account. "
        "Each task's log names its account's error, TikTok's log_id and the next step.",
        url=dag_run_url(dag_id, run_id),
        # Named by the failures it carries (each key names its try), not by their number: the digest of
        # a run cleared again, with as many failures, is another message, which a receiver that
        # deduplicates (and deliver() in this process) must not drop; a retry of this one is the same.
        dedupe_key=f"digest|{dag_id}|{run_id}|{_fingerprint(a.get('dedupe_key') for a in folded)}",
    )


def _fingerprint(keys: Any) -> str:
    return hashlib.sha256("\n".join(sorted(str(k) for k in keys)).encode()).hexdigest()[:16]


def send_digest(
    engine: Any,
    *,
    dag_id: str,
    run_id: str,
    alerts_conn_id: str = ALERTS_CONN_ID,
    now: datetime,
    leftover: bool = False,
) -> dict[str, Any]:
    """Send the run's unsent failures as one message.

    The run's lock is held until they are recorded as sent: another sender of the same run (a leftover
    sweep, a failure callback) waits, then finds them sent. A crash before that commit sends them
    again (at least once, never lost); a refusal raises with nothing recorded (the task retries).
    """
    with engine.begin() as conn:
        _run_lock(conn, dag_id, run_id)
        rows = conn.execute(
            text(
                "SELECT dedupe_key, alert, folded, sent_at FROM tiktok.alert_outbox"
                " WHERE dag_id = :d AND run_id = :r AND kind = 'task_failed' ORDER BY created_at, dedupe_key"
            ),
            {"d": dag_id, "r": run_id},
        ).all()
        # Every failure not sent yet: the folded ones, and those that were to go out one by one but the
        # destination refused then (a webhook's 5xx, an SMTP server down): else nothing would send them.
        pending = [r for r in rows if r.sent_at is None]
        summary = {"failures": len(rows), "folded": sum(r.folded for r in pending), "digest_sent": False}
        if not pending:
            return summary
        alert = digest_alert(
            dag_id,
            run_id,
            [r.alert for r in pending],
            sent_alone=sum(not r.folded and r.sent_at is not None for r in rows),
            not_sent_alone=sum(not r.folded for r in pending),
            leftover=leftover,
        )
        summary["digest_sent"] = deliver(alert, alerts_conn_id)  # raises when the destination refuses: retried
        if summary["digest_sent"]:
            _set_sent(conn, [r.dedupe_key for r in pending], now)
    return summary


#: Unsent failures older than this belong to a run whose digest did not run: a later digest sends them.
LEFTOVER_AFTER = timedelta(hours=1)


def run_is_over(ti: Any) -> Any:
    """``(dag_id, run_id) -> bool`` asking Airflow through the task's own API (a deleted run is over)."""

    def over(dag_id: str, run_id: str) -> bool:
        try:
            state = ti.get_dagrun_state(dag_id=dag_id, run_id=run_id)
        except Exception:  # no such run any more, or no API: nobody else will send them
            return True
        return str(getattr(state, "value", state)) not in ("queued", "running")

    return over


#: Outbox rows are kept this long (for on-call's questions), then deleted.
OUTBOX_RETENTION = timedelta(days=30)


def send_leftovers(
    engine: Any,
    *,
    run_is_over: Any,
    alerts_conn_id: str = ALERTS_CONN_ID,
    now: datetime,
    older_than: timedelta = LEFTOVER_AFTER,
) -> dict[str, Any]:
    """Send the failures of runs whose digest never ran, one digest per run; prune old rows.

    A run that on-call marks failed (or that is stopped) skips its ``alert_digest``: the failures it
    had folded would wait for ever. Every later digest, of any run, and the daily ``check_consent``
    send them, once each (the run's lock and ``sent_at`` keep two senders from both sending).

    :param run_is_over: ``(dag_id, run_id) -> bool``: whether Airflow has ended that run (or it is
        gone); a run still going sends its own digest at its end.
    """
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM tiktok.alert_outbox WHERE created_at < :t"), {"t": now - OUTBOX_RETENTION})
        runs = conn.execute(
            text(
                "SELECT dag_id, run_id FROM tiktok.alert_outbox WHERE kind = 'task_failed' AND sent_at IS NULL"
                " GROUP BY dag_id, run_id HAVING max(created_at) < :t ORDER BY min(created_at) LIMIT 50"
            ),
            {"t": now - older_than},
        ).all()
    sent = 0
    runs = [run for run in runs if run_is_over(run.dag_id, run.run_id)]
    for run in runs:
        sent += bool(
            send_digest(
                engine, dag_id=run.dag_id, run_id=run.run_id, alerts_conn_id=alerts_conn_id, now=now, leftover=True
            )["digest_sent"]
        )
    return {"leftover_runs": len(runs), "leftover_digests_sent": sent}


DIGEST_DOC = """
### alert_digest
Runs at the end of every run, whatever failed (trigger rule `all_done`). The first
`[tiktok] alerts_per_run` (default 5) account tasks of a run that fail each send their own alert;
the ones after that are folded into **one** message sent here: how many, grouped by error, the
accounts, and a link to this run. Failures after it has run (on-call cleared only the failed tasks)
are sent one by one; clearing the whole run clears this task too.

**On failure:** the alert destination (the `tiktok_alerts` connection) refused or could not be
reached; the folded failures stay recorded as unsent in `tiktok.alert_outbox`. Fix the connection
and clear this task: it sends them then.
"""


def digest_task(tiktok_conn_id: str | None = None, alerts_conn_id: str = ALERTS_CONN_ID) -> Any:
    """The run's ``alert_digest`` task; put it downstream of the per-account tasks."""
    from airflow.sdk import task

    conn_id = tiktok_conn_id or TIKTOK_CONN_ID

    @task(task_id=DIGEST_TASK_ID, trigger_rule="all_done", retries=2, doc_md=DIGEST_DOC)
    def alert_digest(**context: Any) -> dict[str, Any]:
        ti = context["ti"]
        engine, now = _engine(conn_id), datetime.now(UTC)
        summary = send_digest(engine, dag_id=ti.dag_id, run_id=ti.run_id, alerts_conn_id=alerts_conn_id, now=now)
        leftovers = send_leftovers(engine, run_is_over=run_is_over(ti), alerts_conn_id=alerts_conn_id, now=now)
        return {**summary, **leftovers}

    return alert_digest()
