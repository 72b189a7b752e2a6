"""What the tests that start whole stacks share (tests/deploy, tests/accounts): ports, databases,
the environment of a stack's processes, running a module, and a headless Chromium page."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tiktok_ops.settings import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def drop_databases(server: str, *names: str) -> None:
    """Drop databases of ``server`` (ending any session on them); bootstrap creates them again."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(f"{server}/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


def stack_env(*, home: Path, airflow_db: str, warehouse_db: str, sim_port: int, **extra: str) -> dict[str, str]:
    """The environment of a stack's processes: this one without the session's Airflow setup (test
    databases, AIRFLOW_CONN_* of other fixtures), with the stack's home, databases and ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW", "TIKTOK_"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(
                str(ROOT / folder) for folder in ("include", "plugins", "tools", "simulator")
            ),
            "TIKTOK_AIRFLOW_DB": airflow_db,
            "TIKTOK_WAREHOUSE_DB": warehouse_db,
            "TIKTOK_SIM_PORT": str(sim_port),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # The DAG files do not change while a test stack runs: parsed at start, not every 30 s
            # (the default), which cost each idle stack ~12% of a core of the suite's two.
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
            **extra,
        }
    )
    return env


def run_module(env: dict[str, str], *argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``python -m argv`` in the repository with ``env``; fail with its output unless it succeeds."""
    done = subprocess.run(
        [sys.executable, "-m", *argv], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@contextlib.contextmanager
def chromium_page(*, width: int) -> Iterator[Any]:
    """A page of headless Chromium (Debian's: test tools cannot download their own)."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            browser.close()
