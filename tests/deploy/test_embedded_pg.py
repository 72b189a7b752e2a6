"""`make demo` and `make up` on a machine without a Postgres server: the embedded one (tiktok_tools.pgserver).

"No server" is made by pointing ``TIKTOK_PG_PROBE`` at a port nothing listens on, with no
``TIKTOK_PG_SERVER``: the machine's own server keeps running for everyone else, and each test has
an AIRFLOW_HOME (so a data directory and a server) of its own, with databases whose names the
machine's server does not have, to show that nothing went there.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from stack_support import free_port

from tiktok_ops.settings import DEFAULT_PG_SERVER, ROOT, Settings
from tiktok_tools import pgserver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SYSTEM = Settings.from_env()


@pytest.fixture
def home() -> Iterator[Path]:
    """An AIRFLOW_HOME the server's user can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="tiktok-embedded-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        pgserver.stop(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> str:
    """Nothing answers where the tools look for Postgres."""
    dead = f"127.0.0.1:{free_port()}"
    assert not pgserver.answers(dead)
    monkeypatch.delenv("TIKTOK_PG_SERVER", raising=False)
    monkeypatch.setenv("TIKTOK_PG_PROBE", dead)
    return dead


def environment(home: Path, probe: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW", "TIKTOK_"))}
    env.update(
        PYTHONPATH=os.pathsep.join(str(ROOT / folder) for folder in ("include", "plugins", "tools", "simulator")),
        AIRFLOW_HOME=str(home),
        TIKTOK_PG_PROBE=probe,
        TIKTOK_AIRFLOW_DB=f"airflow_embedded_{tag}",
        TIKTOK_WAREHOUSE_DB=f"tiktok_embedded_{tag}",
        TIKTOK_SIM_PORT=str(free_port()),
    )
    return env


def run(env: dict[str, str], *argv: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *argv], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{output[-4000:]}"
    return output


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def system_databases() -> set[str]:
    conn = psycopg2.connect(f"{SYSTEM.pg_server}/postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database")
            return {name for (name,) in cur.fetchall()}
    finally:
        conn.close()


def test_make_demo_runs_on_an_embedded_server_as_a_user_postgres_accepts_then_stops_it(
    home: Path, no_server: str
) -> None:
    env = environment(home, no_server)
    output = run(env, "tiktok_tools.bootstrap")  # `make demo` = bootstrap, then the demo
    assert f"nothing answers on {no_server}, so an embedded PostgreSQL" in output
    url = pgserver.running_url(home)
    assert url and url.startswith("postgresql://postgres:") and "@127.0.0.1:" in url
    pid, _ = pgserver._postmaster(pgserver.Embedded(home))
    if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as a dedicated unprivileged user
        assert uid_of(pid) != 0
        assert Path(home / "postgres").stat().st_uid == uid_of(pid)
    assert stat.S_IMODE((home / "postgres.secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "postgres").stat().st_mode) == 0o700
    # Password authentication: the superuser's password is needed, and the DAG role is a login of its own.
    server = url.rsplit("@", 1)[1]
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(f"postgresql://postgres:wrong@{server}/postgres").close()
    role = f"{env['TIKTOK_WAREHOUSE_DB']}_dags"
    password = (home / "dag_role.secret").read_text().strip()
    conn = psycopg2.connect(f"postgresql://{role}:{password}@{server}/{env['TIKTOK_WAREHOUSE_DB']}")
    conn.close()

    output = run(env, "tiktok_tools.demo", "--accounts", "1", "--videos", "30")
    assert "demo: all runs succeeded" in output, output[-3000:]
    assert "demo: stopped the embedded PostgreSQL server" in output
    assert pgserver.running_url(home) is None
    assert pgserver.exited(pid), "the server process is still there"
    assert not {env["TIKTOK_AIRFLOW_DB"], env["TIKTOK_WAREHOUSE_DB"]} & system_databases()

    # Settings fall back to the machine's server once the embedded one is stopped.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_HOME", str(home))
        assert Settings.from_env().pg_server == DEFAULT_PG_SERVER


def test_the_server_stops_only_when_its_last_holder_lets_go(home: Path, no_server: str) -> None:
    url = pgserver.ensure(home, "up")
    assert url is not None
    assert pgserver.ensure(home, "demo-1", pid=os.getpid()) == url  # the same server, held twice
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_HOME", str(home))
        assert Settings.from_env().pg_server == url, "while it runs, everything uses it"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pgserver.hold(home, "demo-crashed", pid=dead.pid)  # a demo that died holds nothing
    assert pgserver.holders(home) == ["demo-1", "up"]
    assert pgserver.release(home, "demo-1") is False  # `make up` still uses it
    assert pgserver.running_url(home) == url
    assert pgserver.release(home, "up") is True  # `make down`
    assert pgserver.running_url(home) is None
    assert pgserver.release(home, "up") is False  # a second `make down` does nothing
    # The machine's server is used when it answers: nothing embedded is started.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOK_PG_PROBE", SYSTEM.pg_server.rsplit("@", 1)[1])
        assert pgserver.ensure(home, "up") is None
        assert pgserver.running_url(home) is None
        patch.setenv("TIKTOK_PG_SERVER", SYSTEM.pg_server)
        patch.setenv("TIKTOK_PG_PROBE", no_server)
        assert pgserver.ensure(home, "up") is None, "TIKTOK_PG_SERVER wins"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs another user for the server")
def test_a_home_the_servers_user_cannot_enter_fails_clearly_and_changes_no_mode(no_server: str) -> None:
    private = Path(tempfile.mkdtemp(prefix="tiktok-private-"))  # 0700, root's
    try:
        home = private / "airflow"
        with pytest.raises(pgserver.EmbeddedPostgresError, match=f"cannot enter {private}"):
            pgserver.ensure(home, "up")
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        assert pgserver.running_url(home) is None
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_make_up_and_make_down_on_the_embedded_server(home: Path, no_server: str) -> None:
    env = environment(home, no_server)
    env.update(
        AIRFLOW__API__PORT=str(free_port()),
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
    )
    try:
        run(env, "tiktok_tools.bootstrap")  # `make up` = bootstrap, then `up start`
        output = run(env, "tiktok_tools.up", "start", "--sim-accounts", "1", "--sim-videos", "10")
        assert "Airflow is up" in output and "1 simulated accounts connected" in output, output[-3000:]
        url = pgserver.running_url(home)
        assert url is not None and pgserver.holders(home) == ["up"]
        status = subprocess.run(
            [sys.executable, "-m", "tiktok_tools.up", "status"], env=env, cwd=ROOT, capture_output=True, text=True
        )
        assert f"embedded, on {url.rsplit('@', 1)[1]} (held by up)" in status.stdout, status.stdout
        # A demo beside it (here: its holder) does not stop the server `make up` uses.
        assert pgserver.ensure(home, "demo-x", pid=os.getpid()) == url
        assert pgserver.release(home, "demo-x") is False
    finally:
        output = run(env, "tiktok_tools.up", "stop")  # `make down`
    assert "stopped the embedded PostgreSQL server" in output
    assert pgserver.running_url(home) is None
    assert not {env["TIKTOK_AIRFLOW_DB"], env["TIKTOK_WAREHOUSE_DB"]} & system_databases()
