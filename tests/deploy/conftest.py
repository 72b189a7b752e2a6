"""Whole Airflow stacks for the deploy tests, started the way `make up` starts them.

Each stack gets databases, ports, a queue and an AIRFLOW_HOME of its own, so it runs beside
`make up`, the demo and other test sessions. It is stopped with `python -m tiktok_tools.up stop`
even when the test fails, and the teardown fails if any of its processes is left.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from stack_support import drop_databases, free_port, run_module, stack_env

from tiktok_ops.settings import ROOT, Settings
from tiktok_tools import up

#: The session's settings (the root conftest has chosen its database names by now).
SETTINGS = Settings.from_env()

ARTIFACTS = ROOT / "test-artifacts"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deploy: starts a whole Airflow stack in the background (slow, ~1 min)")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """Keep each phase's report on the test item (``item.rep_call``), for screenshots of failures."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def recreate_databases(*names: str) -> None:
    """Drop (ending any session on them) and leave them to bootstrap to create."""
    drop_databases(SETTINGS.pg_server, *names)


@dataclass
class DeployedStack:
    """A running stack: where its API, simulator and databases are, and how to log in."""

    url: str
    sim_url: str
    home: Path
    env: dict[str, str]
    airflow_db: str
    warehouse_db: str
    queue: str
    start_output: str = ""
    _token: str | None = field(default=None, repr=False)

    @property
    def password(self) -> str:
        return json.loads((self.home / up.PASSWORDS_FILE).read_text())[up.ADMIN_USER]

    def database_url(self, database: str) -> str:
        return SETTINGS.database_url(database)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the REST API as admin; return the JSON answer (raising on HTTP errors)."""
        if self._token is None:
            self._token = up.api_token(self.url, up.ADMIN_USER, self.password)
        answer = requests.request(
            method, f"{self.url}{path}", headers={"Authorization": f"Bearer {self._token}"}, timeout=30, **kwargs
        )
        answer.raise_for_status()
        return answer.json() if answer.content else None

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 180) -> dict[str, Any]:
        """Poll a DAG run until it finishes; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(1)
        raise AssertionError(f"{dag_id} run {run_id} did not finish within {timeout}s (state {run['state']})")

    def log(self, name: str) -> str:
        return (self.home / "up" / f"{name}.log").read_text(errors="replace")


def _sessions(home: Path) -> list[int]:
    """The session ids of the stack's processes (each component leads one), from its pid files."""
    return [int(p.read_text().split()[0]) for p in (home / "up").glob("*.pid")]


def _session_members(sessions: list[int]) -> list[str]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[-1].split()
            if int(fields[3]) in sessions and fields[0] != "Z":
                members.append(f"{stat.parent.name} ({fields[0]})")
    return members


@contextlib.contextmanager
def deployed_stack(
    tag: str, home: Path, *, executor: str, up_args: list[str] = (), extra_env: dict[str, str] | None = None
) -> Iterator[DeployedStack]:
    """Bootstrap and start a stack with ``python -m tiktok_tools.up start``; stop it afterwards."""
    airflow_db, warehouse_db = f"{SETTINGS.airflow_db}_{tag}", f"{SETTINGS.warehouse_db}_{tag}"
    api_port, sim_port = free_port(), free_port()
    queue = f"{tag}_{uuid.uuid4().hex[:8]}"
    env = stack_env(
        home=home,
        airflow_db=airflow_db,
        warehouse_db=warehouse_db,
        sim_port=sim_port,
        TIKTOK_PG_SERVER=SETTINGS.pg_server,
        AIRFLOW__CORE__EXECUTOR=executor,
        AIRFLOW__API__PORT=str(api_port),
        AIRFLOW__OPERATORS__DEFAULT_QUEUE=queue,
        **(extra_env or {}),
    )
    recreate_databases(airflow_db, warehouse_db)
    python = sys.executable
    stack = DeployedStack(
        url=f"http://127.0.0.1:{api_port}",
        sim_url=f"http://127.0.0.1:{sim_port}",
        home=home,
        env=env,
        airflow_db=airflow_db,
        warehouse_db=warehouse_db,
        queue=queue,
    )
    try:
        run_module(env, "tiktok_ops.bootstrap", timeout=180)
        began = time.monotonic()
        started = run_module(env, "tiktok_tools.up", "start", *up_args, timeout=300)
        stack.start_output = started.stdout
        print(f"\n{tag}: `up start` took {time.monotonic() - began:.0f}s", file=sys.stderr)
        yield stack
    finally:
        sessions = _sessions(home) if (home / "up").exists() else []
        stopped = subprocess.run(
            [python, "-m", "tiktok_tools.up", "stop"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        left = _session_members(sessions)
        recreate_databases(airflow_db, warehouse_db)
        assert stopped.returncode == 0, stopped.stderr
        assert not left, f"`up stop` left processes of the stack running: {left}"


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedStack]:
    """What `make up` runs (LocalExecutor), with one simulated account of 40 videos."""
    home = tmp_path_factory.mktemp("ui-stack")
    with deployed_stack(
        "deploy_ui", home, executor="LocalExecutor", up_args=["--sim-accounts", "1", "--sim-videos", "40"]
    ) as stack:
        yield stack


#: Accounts of the Celery stack's simulator.
CELERY_ACCOUNTS = 2


#: The Celery stack's Deadline Alert interval (hours): 2 s, so that every run it starts is late.
CELERY_DEADLINE_HOURS = 2 / 3600


@pytest.fixture(scope="module")
def alerts_receiver() -> Iterator[Any]:
    """The webhook the Celery stack's ``tiktok_alerts`` connection posts to (tests/receivers.py)."""
    from receivers import http_receiver

    with http_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory: pytest.TempPathFactory, alerts_receiver: Any) -> Iterator[DeployedStack]:
    """What docker-compose.yaml runs (CeleryExecutor, Redis broker and results), on this machine.

    Its daily DAGs carry a 2-second Deadline Alert whose message goes to ``alerts_receiver``: the
    scheduler finds each run late and the triggerer sends the alert, as in production.
    """
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not answering on 127.0.0.1:6379 ({exc}); .ci/run starts it (redis-server)")
    home = tmp_path_factory.mktemp("celery-stack")
    with deployed_stack(
        "deploy_celery",
        home,
        executor="CeleryExecutor",
        up_args=["--sim-accounts", str(CELERY_ACCOUNTS), "--sim-videos", "20"],
        extra_env={
            # Only the DAG under test runs: the others stay paused, as they are created.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__TIKTOK_ALERTS__DEADLINE_HOURS": str(CELERY_DEADLINE_HOURS),
            "AIRFLOW_CONN_TIKTOK_ALERTS": json.dumps({"conn_type": "http", "host": f"{alerts_receiver.url}/alerts"}),
        },
    ) as stack:
        yield stack
