"""A DAG task whose warehouse statement waits on another session's lock fails at the bound; the retry succeeds.

``tiktok_marts_refresh`` through ``dag.test()`` on the real warehouse. An admin's session refreshes a
materialized mart by hand in a transaction it leaves open, holding the lock ``REFRESH ... CONCURRENTLY``
needs. With
``[tiktok] warehouse_lock_timeout`` at 1 s the first try fails (retryable, saying who holds the lock);
the admin ends the transaction before the retry (the task's ``on_retry_callback``), which succeeds.
Without a bound the first try would wait inside libpq for as long as the lock is held, past the
task's ``execution_timeout``: a watchdog ends the lock after a minute so that bug fails the test
instead of hanging it.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import psycopg2
import pytest
from dag_support import states, tries
from sqlalchemy import text

pytestmark = pytest.mark.integration

HANG = 60.0


def test_a_task_blocked_by_a_lock_fails_at_the_bound_and_its_retry_succeeds(
    tiktok_connections: Any, clean_warehouse: Any, test_databases: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dags.tiktok_marts_refresh import dag_object

    monkeypatch.setenv("AIRFLOW__TIKTOK__WAREHOUSE_LOCK_TIMEOUT", "1")
    task = dag_object.get_task("refresh_materialized_views")
    monkeypatch.setattr(task, "retry_delay", timedelta(0))
    monkeypatch.setattr(task, "retry_exponential_backoff", 0)

    admin = psycopg2.connect(
        test_databases.database_url(test_databases.warehouse_db, driver="postgresql"), application_name="admin psql"
    )
    retried: list[str] = []

    def end_admin_transaction(context: Any) -> None:
        retried.append(str(context.get("exception")))
        admin.rollback()

    monkeypatch.setattr(task, "on_retry_callback", [end_admin_transaction])
    with admin.cursor() as cursor:
        cursor.execute("REFRESH MATERIALIZED VIEW tiktok.mart_account_engagement")  # ACCESS EXCLUSIVE till the end
    admin_pid = admin.get_backend_pid()
    hung: list[bool] = []

    def end_the_wait() -> None:  # a wait the bound failed to end: the bug; end it so the test can fail
        hung.append(True)
        with psycopg2.connect(test_databases.database_url(test_databases.warehouse_db, driver="postgresql")) as other:
            other.cursor().execute("SELECT pg_terminate_backend(%s)", (admin_pid,))

    watchdog = threading.Timer(HANG, end_the_wait)
    watchdog.start()
    try:
        run = dag_object.test()
    finally:
        watchdog.cancel()
        if not hung:
            admin.rollback()
        admin.close()

    assert not hung, f"the task waited for the lock for {HANG:.0f}s: no bound"
    assert states(run) == {("refresh_materialized_views", -1): "success"}
    assert tries(run) == {("refresh_materialized_views", -1): 2}, "the first try failed at the bound, the retry ran"
    assert len(retried) == 1
    [error] = retried
    assert "[tiktok] warehouse_lock_timeout (1s)" in error
    assert "application 'admin psql'" in error and "mart_account_engagement AccessExclusiveLock" in error
    assert "Airflow retries it" in error
    with clean_warehouse.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tiktok.mart_account_engagement")).scalar() == 0
