"""``pgserver.exited``: a stopped postmaster may stay a zombie where nothing reaps daemons."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tiktok_tools import pgserver

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_a_running_process_has_not_exited() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not pgserver.exited(child.pid)
    finally:
        child.kill()
        child.wait()


def test_an_unreaped_zombie_counts_as_exited_and_a_reaped_process_too() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert os.path.exists(f"/proc/{child.pid}")  # a zombie: still listed, not reaped
    assert pgserver.exited(child.pid)
    child.wait()
    assert pgserver.exited(child.pid)
