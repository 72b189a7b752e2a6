"""A shared budget whose Postgres answers nothing (a lock, a stuck server) must not hang a task for ever."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg2
import pytest

from tests.conftest import SETTINGS
from tiktok_provider.budget import PostgresStore, SharedBudget, StoreUnavailable

pytestmark = pytest.mark.timeout(120)


def test_a_locked_budget_table_gives_up_and_paces_locally_instead_of_hanging(warehouse_engine: Any) -> None:
    dsn = SETTINGS.database_url(SETTINGS.warehouse_db, driver="postgresql")
    store = PostgresStore(lambda: psycopg2.connect(dsn, connect_timeout=3))
    # First contact (connect, PREPARE, the slot rows) while nothing blocks.
    store.try_acquire("app-stuck", "/v2/user/info/", 5, 60.0, 0, "test")

    # Another session holds the table, as a migration or a VACUUM FULL would, or a stuck backend.
    blocker = psycopg2.connect(dsn)
    outcome: dict[str, Any] = {}
    try:
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE tiktok.rate_budget_slots IN ACCESS EXCLUSIVE MODE")

        def call() -> None:
            started = time.monotonic()
            try:
                outcome["result"] = store.try_acquire("app-stuck", "/v2/user/info/", 5, 60.0, 0, "test")
            except StoreUnavailable as exc:
                outcome["error"] = exc
            outcome["seconds"] = time.monotonic() - started

        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(timeout=30)
        hung = worker.is_alive()
    finally:
        blocker.rollback()
        blocker.close()
    assert not hung, "the budget store waited more than 30 s on a locked table (for ever, without a timeout)"
    assert isinstance(outcome.get("error"), StoreUnavailable)
    assert outcome["seconds"] < 15
    # and the budget, seeing it unavailable, falls back to pacing this process alone (no hang)
    budget = SharedBudget(store, "app-stuck", "/v2/user/info/", 5, 0.5, sleep=lambda s: None)
    assert budget.acquire()[1][0] in ("shared", "local")


def test_a_budget_session_ended_under_it_reconnects_at_once_instead_of_waiting_a_window(
    warehouse_engine: Any, caplog: Any
) -> None:
    """A Postgres restart, a pooler or an admin ends the budget's session: that is not an outage.

    The accounts page's callback waited a whole window (60 s) after another request's session was
    ended, and the browser gave up on it; one fresh session decides instead.
    """
    from sqlalchemy import text

    dsn = SETTINGS.database_url(SETTINGS.warehouse_db, driver="postgresql")
    store = PostgresStore(lambda: psycopg2.connect(dsn, connect_timeout=3, application_name="tiktok_budget_ended"))
    slept: list[float] = []
    budget = SharedBudget(store, "app-ended", "/v2/user/info/", 5, 60.0, sleep=slept.append)
    _, hold = budget.acquire()
    budget.release(hold)
    assert hold[0] == "shared"
    with warehouse_engine.begin() as conn:
        ended = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'tiktok_budget_ended'"
            )
        ).scalar()
    assert ended == 1
    caplog.set_level("WARNING", logger="tiktok_provider.budget")
    _, hold = budget.acquire()
    budget.release(hold)
    assert hold[0] == "shared", "a fresh session took the slot from the shared store"
    assert sum(slept) < 1, f"waited {sum(slept):.0f}s for an ended session"
    assert "unreachable" not in caplog.text
