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
