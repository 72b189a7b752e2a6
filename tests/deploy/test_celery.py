"""The distributed path: tiktok_profile_snapshot to success through a scheduler and a Celery worker.

The stack is the one docker-compose.yaml runs, on this machine: api-server (the workers' execution
API), scheduler, dag-processor, triggerer and ``airflow celery worker`` with the CeleryExecutor,
Redis on 127.0.0.1:6379 as broker and the stack's own Postgres database as result backend.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine, text

if TYPE_CHECKING:
    from tests.deploy.conftest import DeployedStack

pytestmark = [pytest.mark.deploy, pytest.mark.integration, pytest.mark.timeout(600)]

DAG_ID = "tiktok_profile_snapshot"
ACCOUNTS = 2  # conftest.CELERY_ACCOUNTS


def _query(stack: DeployedStack, database: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(stack.database_url(database))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def test_profile_snapshot_runs_to_success_on_a_celery_worker(celery_stack: DeployedStack) -> None:
    stack = celery_stack
    assert "CeleryExecutor: api-server, scheduler, dag-processor, triggerer, celery-worker" in stack.start_output

    stack.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
    run = stack.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}})
    finished = stack.wait_for_run(DAG_ID, run["dag_run_id"])

    tis = stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances")["task_instances"]
    states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in tis}
    assert finished["state"] == "success", states
    assert states == {
        ("select_accounts", -1): "success",
        **{("snapshot_profile", i): "success" for i in range(ACCOUNTS)},
        ("check_profile_snapshots", -1): "success",
        ("summarize", -1): "success",
        ("publish_assets", -1): "success",
        ("check_consent", -1): "success",
        ("alert_digest", -1): "success",
    }
    # Every task went through the stack's own Celery queue ...
    assert {ti["queue"] for ti in tis} == {stack.queue}
    # ... was picked up by the worker, whose results Celery stored in Postgres.
    worker_log = stack.log("celery-worker")
    assert "Task execute_workload" in worker_log and "succeeded" in worker_log, worker_log[-3000:]
    results = dict(_query(stack, stack.airflow_db, "SELECT status, count(*) FROM celery_taskmeta GROUP BY status"))
    assert results.get("SUCCESS", 0) >= 1, results

    today = datetime.now(UTC).date()
    rows = _query(
        stack,
        stack.warehouse_db,
        "SELECT a.open_id, p.follower_count FROM tiktok.accounts a"
        " JOIN tiktok.profile_snapshots p ON p.open_id = a.open_id AND p.snapshot_date = :today",
        today=today,
    )
    assert len(rows) == ACCOUNTS, rows
    assert all(followers is not None and followers >= 0 for _, followers in rows)
