"""The distributed path: tiktok_profile_snapshot to success through a scheduler and a Celery worker.

The stack is the one docker-compose.yaml runs, on this machine: api-server (the workers' execution
API), scheduler, dag-processor, triggerer and ``airflow celery worker`` with the CeleryExecutor,
Redis on 127.0.0.1:6379 as broker (database 0) and result backend (database 1). The worker, as in
docker-compose.yaml, holds neither Airflow's metadata database URL nor its Fernet key: its metadata URL
points at a server that does not exist, so the run succeeding proves the tasks need neither.

The stack's Deadline Alert is 2 s (conftest.CELERY_DEADLINE_HOURS), so the same run is late: the
alert reaches on-call through the real dag-processor, scheduler and triggerer, which ``dag.test()``
cannot show (the tests and the demo turn deadlines off, see tiktok_pipeline.deadlines).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text

from tiktok_ops.settings import ROOT
from tiktok_tools import up

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


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def _worker_processes(stack: DeployedStack) -> list[int]:
    """The celery worker and everything it runs (its pool, the task supervisors), by its session."""
    from tiktok_tools.procs import processes

    leader = int((stack.home / "up" / "celery-worker.pid").read_text().split()[0])
    members = [p.pid for p in processes().values() if p.session == leader]
    assert leader in members, f"the celery worker (pid {leader}) is not running"
    return members


def _effective_config(env: dict[str, str]) -> dict[str, str]:
    """What Airflow's configuration (environment and $AIRFLOW_HOME/airflow.cfg) gives a process with ``env``."""
    code = (
        "import json; from airflow.configuration import conf; print(json.dumps({"
        "'sql_alchemy_conn': conf.get('database', 'sql_alchemy_conn', fallback=''),"
        "'fernet_key': conf.get('core', 'fernet_key', fallback=''),"
        "'jwt_secret': conf.get('api_auth', 'jwt_secret', fallback='')}))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_no_metadata_access(stack: DeployedStack) -> None:
    """The worker's processes hold no metadata URL, Fernet key or JWT secret; nor does its airflow.cfg."""
    metadata_url = stack.database_url(stack.airflow_db)
    server = metadata_url.split("://", 1)[1].rsplit("/", 1)[0]
    fernet_key = (stack.home / "fernet.key").read_text().strip()
    jwt_secret = (stack.home / "jwt.secret").read_text().strip()
    for pid in _worker_processes(stack):
        env = _environ(pid)
        assert env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") == up.NO_METADATA_DATABASE, pid
        assert not [key for key in env if re.search("FERNET_KEY|JWT_SECRET|SQL_ALCHEMY_CONN_", key)], pid
        assert "TIKTOK_PG_SERVER" not in env, "the Postgres server's URL (its superuser)"
        # Nor any URL of the Postgres server (user@host:port), under whatever name, nor the secrets' values.
        secrets = (fernet_key, jwt_secret, server)
        assert not [key for key, value in env.items() if any(secret in value for secret in secrets)], pid
    # Nor does the stack's airflow.cfg (AIRFLOW_HOME is shared with the other components) fill them in.
    config = _effective_config(_environ(_worker_processes(stack)[0]))
    assert config["sql_alchemy_conn"] == up.NO_METADATA_DATABASE and metadata_url not in config.values()
    assert config["fernet_key"] == "", "a Fernet key reaches the worker through airflow.cfg"
    assert config["jwt_secret"] != jwt_secret


def test_profile_snapshot_runs_to_success_on_a_celery_worker(celery_stack: DeployedStack, alerts_receiver: Any) -> None:
    stack = celery_stack
    assert "CeleryExecutor: api-server, scheduler, dag-processor, triggerer, celery-worker" in stack.start_output

    # Unpaused, the daily DAG gets its scheduled run for the last day (a manual run would only
    # queue behind it: max_active_runs=1).
    stack.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
    deadline = time.monotonic() + 120
    while not (runs := stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]):
        assert time.monotonic() < deadline, "the scheduler created no run of the unpaused DAG"
        time.sleep(1)
    [run] = runs
    assert run["run_type"] == "scheduled", run
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
    # ... was picked up by the worker, which ran it without Airflow's metadata database or Fernet key ...
    # (Celery logs a task's success after Airflow has its state: the run can end a moment before.)
    deadline = time.monotonic() + 30
    while True:
        worker_log = stack.log("celery-worker")
        succeeded = re.findall(r"Task execute_workload\[([0-9a-f-]{36})\] succeeded", worker_log)
        if len(succeeded) >= len(tis) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(succeeded) >= len(tis), worker_log[-3000:]
    _assert_no_metadata_access(stack)
    # ... and whose results Celery stored in Redis (database 1), not in the metadata database.
    assert _query(stack, stack.airflow_db, "SELECT to_regclass('public.celery_taskmeta')") == [(None,)]
    worker_env = _environ(_worker_processes(stack)[0])
    backend = worker_env["AIRFLOW__CELERY__RESULT_BACKEND"]
    assert backend == up.RESULT_BACKEND and backend != worker_env["AIRFLOW__CELERY__BROKER_URL"]
    results = _celery_results(backend, succeeded)
    assert set(results.values()) == {"SUCCESS"}, results

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

    # The run was queued more than the 2-second deadline before it finished: the scheduler found it
    # late and the triggerer sent one alert for it (and nothing else was sent: no task failed).
    assert len(stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]) == 1
    deadline = time.monotonic() + 120
    while not alerts_receiver.requests and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(2)  # a second message, were one sent, would be here by now
    messages = alerts_receiver.json()
    sent = [(m.get("kind"), m.get("url"), m.get("facts")) for m in messages]
    assert len(messages) == 1, f"{json.dumps(sent, indent=1)}\n{stack.log('triggerer')[-4000:]}"
    [msg] = messages
    assert msg["kind"] == "deadline_missed", msg
    assert msg["facts"]["DAG"] == DAG_ID
    assert msg["facts"]["Run"] == run["dag_run_id"]
    assert f"/dags/{DAG_ID}/runs/{quote(run['dag_run_id'])}" in msg["url"]


def _celery_results(backend: str, task_ids: list[str]) -> dict[str, str]:
    """The status Celery's result backend (a Redis database) holds of each task."""
    import redis

    client = redis.Redis.from_url(backend)
    try:
        stored = client.mget([f"celery-task-meta-{task_id}" for task_id in task_ids])
    finally:
        client.close()
    pairs = zip(task_ids, stored, strict=True)
    return {task_id: json.loads(value)["status"] if value else "missing" for task_id, value in pairs}
