"""Test session setup: Airflow's environment points at test databases before Airflow is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

os.environ.setdefault("TIKTOK_AIRFLOW_DB", "airflow_test")
os.environ.setdefault("TIKTOK_WAREHOUSE_DB", "tiktok_test")
#: Under pytest-xdist (``make test`` runs three workers), each worker has databases of its own.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER and not os.environ["TIKTOK_AIRFLOW_DB"].endswith(f"_{WORKER}"):
    # The controller's Airflow URL (set below, inherited) names its database, not the worker's.
    if os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "").endswith(f"/{os.environ['TIKTOK_AIRFLOW_DB']}"):
        del os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    for _name in ("TIKTOK_AIRFLOW_DB", "TIKTOK_WAREHOUSE_DB"):
        os.environ[_name] = f"{os.environ[_name]}_{WORKER}"

from tiktok_ops import settings as local_settings  # noqa: E402  (after the database names)

SETTINGS = local_settings.apply()


#: The tier of each top-level test folder, as a marker (``-m unit``, ``-m "not deploy"``).
TIERS = {
    "unit": "unit",
    "dags": "dags",
    "provider": "integration",
    "warehouse": "integration",
    "integration": "integration",
    "sim": "integration",
    "accounts": "integration",
    "chaos": "chaos",
    "deploy": "deploy",
    "bench": "bench",
}


#: Folders whose files start whole Airflow stacks or benchmarks: run first, so that under
#: pytest-xdist (``make test``, a file per worker at a time) the longest files never start last.
#: accounts first: its files are one unit of work (one stack), the longest of the suite.
SLOW_FOLDERS = ("accounts", "bench", "deploy", "chaos")

#: Files that run first in their folder. The accounts browser test waits for the first runs its
#: connect starts; behind the runs other tests' connects queue (max_active_runs=1), that wait took
#: 442 s instead of about 100 (ci20).
FIRST_FILES = ("accounts/test_browser.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its tier, from the folder it lives in; put the slow folders first."""
    root = os.path.dirname(__file__)

    def folder(item: pytest.Item) -> str:
        return os.path.relpath(str(item.path), root).split(os.sep)[0]

    for item in items:
        tier = TIERS.get(folder(item))
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))

    def rank(item: pytest.Item) -> tuple[int, bool]:
        f = folder(item)
        first = os.path.relpath(str(item.path), root).replace(os.sep, "/") in FIRST_FILES
        return (SLOW_FOLDERS.index(f) if f in SLOW_FOLDERS else len(SLOW_FOLDERS), not first)

    # A stable sort: each file's tests stay together and in order.
    items.sort(key=rank)


#: Folders whose files share a stack started once (a package-scoped fixture): under pytest-xdist
#: all of a folder's files go to one worker, which stops the stack after the folder's last test.
SHARED_STACK_FOLDERS = ("accounts",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile``, except that each of :data:`SHARED_STACK_FOLDERS` is one unit of work.

    File by file, several workers would each start (and keep) their own accounts stack: an API server,
    a scheduler, a DAG processor and a triggerer apiece, on a machine of two cores.
    """
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    # Units in collection order (slow folders first, see pytest_collection_modifyitems), not
    # xdist's default of files with the most tests first, which started the chaos files last.
    config.option.loadscopereorder = False

    class SharedStackScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            parts = scope.split("/")
            if len(parts) > 2 and parts[0] == "tests" and parts[1] in SHARED_STACK_FOLDERS:
                return "/".join(parts[:2])
            return scope

    return SharedStackScheduling(config, log)


#: Tables emptied between tests, children first.
WAREHOUSE_TABLES = (
    "alert_outbox",
    "cover_archive",
    "archive_blobs",
    "video_captures",
    "video_snapshots",
    "sync_seen_videos",
    "sync_state",
    "videos",
    "profile_snapshots",
    "accounts",
)


@pytest.fixture(scope="session")
def test_databases() -> local_settings.Settings:
    """Create and migrate the test databases (Airflow's metadata and the warehouse) once."""
    from tiktok_ops import bootstrap

    bootstrap.ensure_databases(SETTINGS)
    bootstrap.migrate_airflow()
    bootstrap.ensure_pool()
    url = SETTINGS.database_url(SETTINGS.warehouse_db)
    subprocess.run([sys.executable, "-m", "tiktok_warehouse.migrate", "upgrade", "--url", url], check=True)
    return SETTINGS


@pytest.fixture(scope="session")
def warehouse_engine(test_databases: local_settings.Settings) -> Iterator[Any]:
    from sqlalchemy import create_engine

    engine = create_engine(test_databases.database_url(test_databases.warehouse_db), pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture
def clean_warehouse(warehouse_engine: Any) -> Any:
    """Empty every warehouse table before the test.

    A test that failed while holding a transaction open (a lock it meant to release in its own
    cleanup) would block the TRUNCATE for ever, and a blocked libpq call ignores pytest-timeout's
    alarm: so such leftovers are ended first, and the TRUNCATE gives up after a minute.
    """
    from sqlalchemy import text

    with warehouse_engine.begin() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
            )
        )
        conn.execute(text("SET LOCAL lock_timeout = '60s'"))
        existing = set(
            conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'tiktok'")).scalars().all()
        )
        tables = ", ".join(f"tiktok.{t}" for t in WAREHOUSE_TABLES if t in existing)
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    return warehouse_engine


@pytest.fixture(scope="session")
def sim() -> Iterator[Any]:
    """One simulator for the session, with limits high enough that tests never share a window."""
    from tiktok_sim.testing import running_simulator

    with running_simulator(seed=2026, accounts=0, rate_limit=100_000, rate_window=60) as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def _sim_clean_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    """Faults configured by one test never leak into the next."""
    yield
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").admin.clear_faults()


@pytest.fixture(scope="session")
def encryption_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def connection_env(sim: Any, encryption_key: str, **extra: Any) -> dict[str, str]:
    """Return the AIRFLOW_CONN_* variables that point the project at ``sim`` and the test warehouse."""
    from tiktok_tools.simaccounts import simulator_connections

    return simulator_connections(
        sim,
        encryption_key=encryption_key,
        warehouse_uri=SETTINGS.database_url(SETTINGS.warehouse_db, driver="postgresql"),
        **{"rate_limit_per_minute": 100_000, "max_backoff_seconds": 0.2, **extra},
    )


@pytest.fixture(scope="session")
def tiktok_connections(sim: Any, encryption_key: str, test_databases: Any) -> Iterator[dict[str, str]]:
    """Point ``tiktok_default`` and ``tiktok_warehouse`` at the simulator and the test warehouse."""
    env = connection_env(sim, encryption_key)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield env


@pytest.fixture
def hook(tiktok_connections: Any, clean_warehouse: Any) -> Any:
    """A hook on the simulator whose retries record their waits instead of sleeping."""
    from tiktok_pipeline.hooks import display_hook

    sleeps: list[float] = []
    h = display_hook(sleep=sleeps.append)
    h.sleeps = sleeps
    return h


@pytest.fixture
def connect_account(sim: Any, hook: Any) -> Callable[..., str]:
    """Create a simulator account and connect it through the real token endpoint; return its open_id."""
    from tiktok_sim.testing import DEFAULT_SCOPES
    from tiktok_tools.simaccounts import connect_sim_account

    def connect(videos: int = 30, scopes: Any = DEFAULT_SCOPES, display_name: str | None = None) -> str:
        return connect_sim_account(sim.admin, hook, videos=videos, scopes=scopes, display_name=display_name)

    return connect
