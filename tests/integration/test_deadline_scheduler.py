"""A missed Deadline Alert reaches on-call through Airflow's own scheduler and triggerer (no dag.test()).

A probe DAG uses ``daily_run_deadline()`` with a one-second interval; its only task waits in a pool
that does not exist, so the run stays unfinished. The dag-processor parses it, the scheduler
queues the run and finds the deadline missed, and the triggerer runs the AsyncCallback, which
posts to a local webhook.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from receivers import http_receiver

PROBE = """
from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

from tiktok_pipeline.deadlines import daily_run_deadline

with DAG(
    "tiktok_deadline_probe",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    deadline=daily_run_deadline(hours=1 / 3600),
):
    EmptyOperator(task_id="never_runs", pool="no_such_pool_so_the_run_stays_unfinished")
"""


def _airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.timeout(400)
def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def test_a_missed_deadline_sends_the_alert_through_scheduler_and_triggerer(test_databases: Any, tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "probe.py").write_text(PROBE)
    with http_receiver() as receiver:
        env = {
            **os.environ,
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW_CONN_TIKTOK_ALERTS": json.dumps({"conn_type": "http", "host": f"{receiver.url}/deadline"}),
        }
        env.pop("_AIRFLOW_PROCESS_CONTEXT", None)
        files = contextlib.ExitStack()
        names = ("dag-processor", "scheduler", "triggerer")
        # Closed by files.close() once the processes are gone.
        logs = {name: files.enter_context(open(tmp_path / f"{name}.log", "w")) for name in names}  # noqa: SIM115
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "airflow", name],
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            for name, f in logs.items()
        ]
        try:
            deadline = time.monotonic() + 240
            triggered = False
            while time.monotonic() < deadline and not receiver.requests:
                if not triggered:
                    result = _airflow(env, "dags", "trigger", "tiktok_deadline_probe")
                    triggered = result.returncode == 0
                time.sleep(2)
            messages = receiver.json()
        finally:
            # Each process leads a session of its own: signal the whole group, or the scheduler's
            # LocalExecutor workers and log server outlive it (ci6 found them idle minutes later).
            for proc in procs:
                _signal_group(proc, signal.SIGTERM)
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
                _signal_group(proc, signal.SIGKILL)
            files.close()
    tails = {n: (tmp_path / f"{n}.log").read_text()[-3000:] for n in logs}
    assert triggered, tails
    assert len(messages) == 1, tails
    [msg] = messages
    assert msg["kind"] == "deadline_missed"
    assert msg["facts"]["DAG"] == "tiktok_deadline_probe"
    assert "/dags/tiktok_deadline_probe/runs/manual__" in msg["url"]
