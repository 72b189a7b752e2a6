"""Reading what a dag.test() run left behind: task states, tries, XComs (tiktok_tools.dagrun), and rows;
and writing what a failed run leaves in the alert outbox."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import text

from tiktok_tools.dagrun import states, tries, xcom

__all__ = ["fold_failure", "rows", "states", "tries", "xcom"]


def rows(engine: Any, query: str, **params: Any) -> list[tuple]:
    """Return the rows of a SQL query as tuples."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(query), params)]


def fold_failure(engine: Any, dag_id: str, run_id: str, account: str, *, created_at: datetime) -> None:
    """Record a failure of ``account``'s snapshot task in tiktok.alert_outbox, folded into the run's digest.

    Its dedupe_key has the real key's shape (tiktok_pipeline.alert_digest): the run, a task instance
    id made from the account, the task, its map index and try.
    """
    key = f"{dag_id}|{run_id}|0190e0a0-0000-7000-8000-{account[-12:]:0>12}|snapshot_profile|-1|1"
    alert = {
        "kind": "task_failed",
        "title": f"TikTok task failed for {account}",
        "dedupe_key": key,
        "facts": {"Account": f"Ana ({account})", "Error": "TikTokServerError internal_error HTTP 500"},
    }
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO tiktok.alert_outbox (dedupe_key, dag_id, run_id, kind, alert, folded, created_at)"
                 " VALUES (:k, :d, :r, 'task_failed', CAST(:a AS jsonb), true, :t)"),
            {"k": key, "d": dag_id, "r": run_id, "a": json.dumps(alert), "t": created_at},
        )  # fmt: skip
