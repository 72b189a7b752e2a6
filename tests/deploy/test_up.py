"""`make down` ends exactly what `make up` started, and the login is generated once (no Airflow here)."""

from __future__ import annotations

import dataclasses
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tiktok_ops import bootstrap
from tiktok_ops.settings import Settings
from tiktok_tools import up


@pytest.fixture
def stack(tmp_path: Path) -> up.Stack:
    return up.Stack(settings=dataclasses.replace(Settings.from_env(), airflow_home=tmp_path), executor="x", api_port=1)


def alive(pid: int) -> bool:
    proc = up._proc(pid)
    return proc is not None and not proc.zombie


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_stop_ends_each_process_and_what_it_spawned_even_in_a_session_of_its_own(stack: up.Stack) -> None:
    # A component whose child starts its own session, and one that ignores SIGTERM.
    script = "import os, subprocess, time; subprocess.Popen(['setsid', 'sleep', '300']); time.sleep(300)"
    leader = up._spawn(stack, "spawner", [sys.executable, "-c", script], up._child_environment())
    stubborn = up._spawn(
        stack, "stubborn", ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"], up._child_environment()
    )
    assert wait_for(lambda: any(up._proc(p).session != leader for p in up._stack_processes(stack, ["spawner"])))
    everything = up._stack_processes(stack, ["spawner", "stubborn"])
    # The child in a session of its own is found through its parent (the stubborn loop's own
    # `sleep 0.1` comes and goes: it is not counted on).
    elsewhere = [p for p in everything if (proc := up._proc(p)) and proc.session not in (leader, stubborn)]
    assert leader in everything and stubborn in everything and elsewhere, everything

    assert up.stop(stack, timeout=2) == ["spawner", "stubborn"]
    assert not [pid for pid in everything if alive(pid)]
    assert not list(stack.run_dir.glob("*.pid"))
    assert up.stop(stack) == []  # idempotent


def test_stop_never_signals_a_pid_that_now_belongs_to_another_process(stack: up.Stack) -> None:
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        stack.run_dir.mkdir(parents=True)
        # A stale pid file: the same pid, but the process it named started at another time.
        stack.pid_file("scheduler").write_text(f"{other.pid} {up._proc(other.pid).start - 1}\n")
        assert up.running(stack, ["scheduler"]) == {"scheduler": None}
        assert up.stop(stack, timeout=1) == []
        assert other.poll() is None, "an unrelated process was killed"
        assert not stack.pid_file("scheduler").exists()
    finally:
        other.kill()
        other.wait()


def test_the_admin_password_is_generated_once_kept_private_and_set_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "passwords.json"
    first = bootstrap.ensure_admin_login(path, "admin")
    assert len(first) >= 16
    assert bootstrap.ensure_admin_login(path, "admin") == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bootstrap.ensure_admin_login(path, "admin", "from-env") == "from-env"
    assert bootstrap.ensure_admin_login(path, "admin") == "from-env"

    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", "compose-secret")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(tmp_path / "auth" / "p.json"))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "ops:admin")
    bootstrap.ensure_admin_from_env()
    assert (tmp_path / "auth" / "p.json").read_text().strip() == '{"ops": "compose-secret"}'
