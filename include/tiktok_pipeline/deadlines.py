"""Deadline Alerts: a daily TikTok run not finished N hours after it was queued tells on-call.

``[tiktok_alerts] deadline_hours`` (default 6) sets N; it is read when the DAG file is parsed
(from airflow.cfg or ``AIRFLOW__TIKTOK_ALERTS__DEADLINE_HOURS``: cheap and offline). The callback
runs in the triggerer (``AsyncCallback``) and sends the message through the same connection as the
task alerts (``tiktok_alerts``).

``off`` (or ``0``) drops the deadline. The local tools that run DAGs through ``dag.test()`` (the
tests, ``make demo``, the bench) set it: in Airflow 3.3.2 ``dag.test()`` crashes when a run of a
DAG with a deadline succeeds (apache/airflow#73428, fix in apache/airflow#73430). The scheduler
is not affected; ``make up`` and docker-compose keep the deadline.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

ALERTS_SECTION = "tiktok_alerts"
DEFAULT_DEADLINE_HOURS = 6.0
CALLBACK = "tiktok_provider.notifications.tiktok.deadline_missed_async"


OFF = ("off", "0", "none", "false")


def deadline_hours() -> float | None:
    """``[tiktok_alerts] deadline_hours``: hours after queued, or None when ``off``."""
    from airflow.configuration import conf

    raw = conf.get(ALERTS_SECTION, "deadline_hours", fallback=None)
    if raw is not None and raw.strip().lower() in OFF:
        return None
    try:
        hours = float(raw) if raw not in (None, "") else DEFAULT_DEADLINE_HOURS
    except ValueError:
        raise ValueError(f"[{ALERTS_SECTION}] deadline_hours must be a number of hours, got {raw!r}") from None
    if not 0 < hours <= 24 * 7:
        raise ValueError(f"[{ALERTS_SECTION}] deadline_hours must be within (0, 168], got {hours}")
    return hours


def daily_run_deadline(hours: float | None = None) -> DeadlineAlert | None:
    """Not finished ``hours`` (default ``[tiktok_alerts] deadline_hours``) after queued -> alert."""
    hours = deadline_hours() if hours is None else hours
    if hours is None:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=hours),
        callback=AsyncCallback(CALLBACK, kwargs={"hours": hours}),
        name="tiktok_daily_run_late",
    )
