"""Chaos tests: the DAGs and operators under faults, crashes, concurrency, bad input and hostile params.

Everything here runs the project as it runs in production, only smaller: the simulator over real
HTTP, the real Postgres, DAGs through ``dag.test()``, and operators in child processes where a test
needs to kill one. The DAGs write through a least-privilege Postgres role (DML on schema
``tiktok`` only), created here the way the README tells a deployer to create it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chaos_support import DAGS_DIR, SETTINGS, chaos_connection_env, role_name
from sqlalchemy.engine import make_url

from tiktok_ops.dag_role import create_dag_role


@pytest.fixture(scope="session")
def dag_role(test_databases: Any) -> dict[str, str]:
    """The least-privilege role and the Airflow connection URI that logs in with it."""
    password = secrets.token_urlsafe(18)
    role = role_name()
    create_dag_role(SETTINGS.pg_server, SETTINGS.warehouse_db, role, password)
    server = make_url(SETTINGS.database_url(SETTINGS.warehouse_db, driver="postgresql"))
    uri = server.set(username=role, password=password).render_as_string(hide_password=False)
    return {"role": role, "password": password, "uri": uri}


@pytest.fixture
def chaos_env(
    sim: Any,
    encryption_key: str,
    dag_role: dict[str, str],
    tiktok_connections: Any,
    clean_warehouse: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    """Point the project at the simulator (chaos tuning) and the warehouse as the DAG role."""
    env = chaos_connection_env(sim, encryption_key, dag_role["uri"])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sim.admin.clear_faults()
    sim.admin.reset_stats()
    yield env
    sim.admin.clear_faults()


@pytest.fixture
def tiktok_extra(
    sim: Any, encryption_key: str, dag_role: dict[str, str], chaos_env: Any, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., None]:
    """Change the hook's tuning (the tiktok_default connection's extra) for the rest of the test."""

    def apply(**extra: Any) -> None:
        for key, value in chaos_connection_env(sim, encryption_key, dag_role["uri"], **extra).items():
            monkeypatch.setenv(key, value)

    return apply


@pytest.fixture
def frozen_clock(sim: Any) -> Iterator[float]:
    """Freeze the simulator's clock at the real time, so counts and cover URLs are the same in every run.

    Tests may advance it; afterwards it runs again from the real time (cover expiries are compared
    with the database's now(), so the simulator must not stay ahead for the tests that follow).
    """
    now = sim.admin.set_clock(time.time(), frozen=True)
    yield now
    sim.admin.set_clock(time.time(), frozen=False)


@pytest.fixture(scope="session")
def chaos_dags(test_databases: Any) -> Any:
    """The four DAGs, parsed once (param defaults read before any run), with Airflow retries that
    start at once (no 30 s retry delay)."""
    from tiktok_tools.dagrun import Dags

    return Dags(DAGS_DIR, instant_retries=True)


@pytest.fixture
def run_dag(chaos_dags: Any, chaos_env: dict[str, str]) -> Callable[..., Any]:
    """Run a DAG through dag.test() and return the DagRun."""
    return chaos_dags.run


@pytest.fixture
def connect(sim: Any, chaos_env: dict[str, str]) -> Callable[..., str]:
    """Create a simulator account and connect it through the real token endpoint; return its open_id."""
    from tiktok_pipeline.hooks import display_hook
    from tiktok_sim.testing import DEFAULT_SCOPES
    from tiktok_tools.simaccounts import connect_sim_account

    def connect_one(videos: int = 30, scopes: Any = DEFAULT_SCOPES) -> str:
        return connect_sim_account(sim.admin, display_hook(), videos=videos, scopes=scopes)

    return connect_one
