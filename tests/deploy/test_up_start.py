"""`up start` with real processes but a stand-in api-server (a small HTTP server) and `sleep` as the
other components: its time limit and what a second `up start` does while the first one waits."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from stack_support import free_port

from tiktok_ops.settings import ROOT, Settings
from tiktok_tools import up

#: An api-server that answers the health checks ``delay`` seconds after it starts, and 404 to the login.
FAKE_API_SERVER = """
import http.server, sys, time
time.sleep(float(sys.argv[2]))
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path in ("/api/v2/monitor/health", "/execution/health")
        self.send_response(200 if ok else 404); self.end_headers(); self.wfile.write(b"{}")
    do_POST = do_GET
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[up.Stack]:
    settings = dataclasses.replace(Settings.from_env(), airflow_home=tmp_path, sim_port=free_port())
    # tiktok_default points elsewhere: the simulator starts, but no account is connected.
    conn = SimpleNamespace(login="sim-key", password="sim-secret", host="http://127.0.0.1:9")
    monkeypatch.setattr(up, "_tiktok_connection", lambda: conn)
    stack = up.Stack(settings=settings, executor="LocalExecutor", api_port=free_port())
    yield stack
    up.stop(stack, timeout=5)


def fake_components(monkeypatch: pytest.MonkeyPatch, api_delay: float) -> None:
    def argv(stack: up.Stack, component: up.Component) -> list[str]:
        if component.name == "api-server":
            return [sys.executable, "-c", FAKE_API_SERVER, str(stack.api_port), str(api_delay)]
        return ["sleep", "300"]

    monkeypatch.setattr(up, "airflow_argv", argv)


def test_start_gives_up_within_its_timeout_not_one_timeout_per_wait(
    stack: up.Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The api-server answers its health checks after 5 s of the 8, and the login never.
    fake_components(monkeypatch, api_delay=5)
    began = time.monotonic()
    with pytest.raises(up.StartError, match="timed out"):
        up.start(stack, accounts=1, videos=1, timeout=8)
    took = time.monotonic() - began
    assert took < 8 + 3, f"`up start --timeout 8` took {took:.1f}s"
    assert not any(up.running(stack, [up.SIMULATOR, "api-server", "scheduler"]).values())


def test_a_second_start_leaves_the_first_one_alone(stack: up.Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_components(monkeypatch, api_delay=300)  # the first start waits for its API server
    first: list[BaseException] = []

    def start_first() -> None:
        try:
            up.start(stack, accounts=1, videos=1, timeout=15)
        except BaseException as exc:  # reported by the test
            first.append(exc)

    thread = threading.Thread(target=start_first)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not stack.pid_file("api-server").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        waiting = up.running(stack, [up.SIMULATOR, "api-server"])
        assert all(waiting.values()), waiting
        began = time.monotonic()
        with pytest.raises(up.StartError, match="another `up start`"):
            up.start(stack, accounts=1, videos=1, timeout=10)
        assert time.monotonic() - began < 3
        # The first start's processes are untouched, and it is still waiting.
        assert up.running(stack, [up.SIMULATOR, "api-server"]) == waiting
        assert thread.is_alive() and not first
    finally:
        up.stop(stack, timeout=5)
        thread.join(30)
    assert first and isinstance(first[0], up.StartError), first


#: `up.start` in a process of its own, with the stand-ins: an api-server that never answers.
START_PROCESS = """
import dataclasses, sys, types
from pathlib import Path
from tiktok_ops.settings import Settings
from tiktok_tools import up
home, api_port, sim_port = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
conn = types.SimpleNamespace(login="sim-key", password="sim-secret", host="http://127.0.0.1:9")
up._tiktok_connection = lambda: conn
up.airflow_argv = lambda stack, component: ["sleep", "300"]
settings = dataclasses.replace(Settings.from_env(), airflow_home=home, sim_port=sim_port)
up.start(up.Stack(settings=settings, executor="LocalExecutor", api_port=api_port), accounts=1, videos=1, timeout=60)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_start_terminated_while_it_waits_stops_what_it_started(stack: up.Stack, sig: signal.Signals) -> None:
    # As `timeout`, a CI job's cancel or a closed terminal end `make up`.
    argv = [sys.executable, "-c", START_PROCESS, str(stack.home), str(stack.api_port), str(stack.settings.sim_port)]
    starting = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not stack.pid_file("api-server").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        names = [up.SIMULATOR, "api-server"]
        assert all(up.running(stack, names).values())
        starting.send_signal(sig)
        output, _ = starting.communicate(timeout=20)
    finally:
        starting.kill()
    assert starting.returncode != 0, output
    assert not up._stack_processes(stack, names), "the start left its processes running"
    assert not list(stack.run_dir.glob("*.pid"))
