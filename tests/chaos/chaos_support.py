"""What the chaos tests share: connections, the DAG role, reading runs and tables, operator children."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dag_support import rows, states, tries, xcom  # noqa: F401 - re-exported for the chaos tests
from sqlalchemy import text

from tiktok_ops.settings import Settings
from tiktok_tools.simaccounts import simulator_connections

ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = ROOT / "dags"
CHILD = Path(__file__).with_name("operator_child.py")
#: The root conftest chose the test databases (TIKTOK_*_DB) before this module is imported.
SETTINGS = Settings.from_env()

#: The hook's tuning under chaos: many cheap attempts, short waits, a read timeout the "slow"
#: fault on the data endpoints exceeds (so timeouts are exercised too) and the token endpoint's
#: does not (a token answer lost after TikTok rotated the refresh token cannot be recovered).
CHAOS_EXTRA: dict[str, Any] = {
    "rate_limit_per_minute": 100_000,
    "max_backoff_seconds": 0.05,
    "max_attempts": 10,
    "connect_timeout": 2.0,
    "read_timeout": 1.0,
}

#: Columns that hold wall-clock times of our own writes (not data), or secrets that differ per run.
VOLATILE = {"captured_at", "checked_at", "first_seen_at", "last_seen_at", "updated_at", "connected_at"}


def role_name() -> str:
    """The DAG role of this test warehouse (roles are cluster-wide: one per warehouse database)."""
    return f"{SETTINGS.warehouse_db}_dags"


def chaos_connection_env(sim: Any, encryption_key: str, warehouse_uri: str, **extra: Any) -> dict[str, str]:
    """The AIRFLOW_CONN_* variables for chaos runs: the simulator, and the warehouse as the DAG role."""
    return simulator_connections(
        sim, encryption_key=encryption_key, warehouse_uri=warehouse_uri, **{**CHAOS_EXTRA, **extra}
    )


# -- reading results ----------------------------------------------------------------------------


def warehouse_contents(engine: Any) -> dict[str, list[tuple]]:
    """Every row of every data table, every column but our own write times and token ciphertexts."""
    contents = {}
    with engine.connect() as conn:
        for table, order in (
            ("accounts", "open_id"),
            ("profile_snapshots", "open_id, snapshot_date"),
            ("videos", "id"),
            ("video_snapshots", "video_id, snapshot_date"),
        ):
            columns = [
                name
                for name in conn.execute(
                    text(
                        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'tiktok'"
                        " AND table_name = :t ORDER BY ordinal_position"
                    ),
                    {"t": table},
                ).scalars()
                if (name not in VOLATILE and not name.endswith(("_enc", "_expires_at"))) or name == "cover_expires_at"
            ]
            contents[table] = [
                tuple(r)
                for r in conn.execute(text(f"SELECT {', '.join(columns)} FROM tiktok.{table} ORDER BY {order}"))
            ]
    return contents


def reset_data(engine: Any) -> None:
    """Empty every data table but keep the connected accounts (and their tokens)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE tiktok.video_snapshots, tiktok.sync_seen_videos, tiktok.sync_state, tiktok.videos,"
                " tiktok.profile_snapshots"
            )
        )


# -- operators in child processes ---------------------------------------------------------------


class Child:
    """An operator's execute() running in its own Python process (so it can be SIGKILLed)."""

    def __init__(self, spec: dict[str, Any], *, env: dict[str, str] | None = None, go_file: Path | None = None):
        child_env = {**os.environ, **(env or {})}
        child_env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins"), str(ROOT)])
        child_env["PYTHONUNBUFFERED"] = "1"
        if go_file is not None:
            child_env["CHAOS_GO_FILE"] = str(go_file)
        self.spec = spec
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=child_env,
            cwd=str(ROOT),
        )
        self.stdout = ""
        self.stderr = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self, timeout: float = 120) -> int:
        out, err = self.process.communicate(timeout=timeout)
        self.stdout, self.stderr = out.decode(errors="replace"), err.decode(errors="replace")
        return self.process.returncode

    def outcome(self) -> dict[str, Any]:
        """The JSON line the child printed last: ``{"result": ...}`` or ``{"error": ..., "type": ...}``."""
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise AssertionError(f"child printed no outcome:\n{self.stdout}\n{self.stderr}")


def run_inline(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the operator of ``spec`` in this process (when nothing needs to kill it); return its summary."""
    from operator_child import build_operator

    return build_operator(spec).execute({})


def run_child(spec: dict[str, Any], *, timeout: float = 120) -> Child:
    child = Child(spec)
    child.wait(timeout)
    return child


def wait_until(predicate: Callable[[], Any], *, timeout: float = 30, interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
