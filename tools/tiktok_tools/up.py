"""`make up` / `make down`: Airflow as it runs in production, in the background on this machine.

``python -m tiktok_tools.up start`` starts the TikTok simulator (on the settings' port, with the
``tiktok_default`` connection's client key and secret, the demo's accounts connected) and Airflow's
components -- api-server, scheduler, dag-processor, triggerer -- on the local Postgres with the
LocalExecutor; ``--executor CeleryExecutor`` adds a Celery worker (Redis as broker and result
backend), as docker-compose.yaml runs it: without Airflow's metadata database, Fernet key or JWT
secret (:func:`worker_environment`). Each process gets its own session, a pid file and a log under
``$AIRFLOW_HOME/up/``. It returns when the UI answers and every DAG of ``dags/`` is
parsed without import errors, and prints where the UI is and how to log in.

``stop`` ends every process ``start`` started, with whatever they spawned (a second ``stop`` does
nothing); ``status`` shows them. Run ``make bootstrap`` first (``make up`` does).

With no Postgres server (no ``TIKTOK_PG_SERVER``, nothing on 127.0.0.1:5432), the stack runs on
the embedded server of :mod:`tiktok_tools.pgserver`: ``start`` holds it, ``stop`` lets it go and
stops it unless a demo is still using it.

The UI login: Airflow's simple auth manager with one user, ``admin``, whose password is generated
once into ``$AIRFLOW_HOME/simple_auth_manager_passwords.json`` (never committed, printed by start).
Set ``AIRFLOW__API__PORT`` (default 8080) and ``TIKTOK_SIM_PORT`` to run a second stack beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from tiktok_ops import bootstrap
from tiktok_ops import settings as local_settings
from tiktok_tools import pgserver
from tiktok_tools.demo import ACCOUNTS, SEED, VIDEOS, printable
from tiktok_tools.procs import proc as _proc
from tiktok_tools.procs import processes as _processes

API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8080
ADMIN_USER = "admin"
PASSWORDS_FILE = "simple_auth_manager_passwords.json"
SIMULATOR = "simulator"
#: How `make up` holds the embedded Postgres server (tiktok_tools.pgserver), until `make down`.
PG_HOLDER = "up"
EXECUTORS = ("LocalExecutor", "CeleryExecutor")
#: Celery's task results: Redis database 1 (the broker has database 0), never Airflow's metadata database.
RESULT_BACKEND = "redis://127.0.0.1:6379/1"
#: What the celery worker's Airflow metadata URL points at: no server, so any use of it fails loudly
#: (rather than quietly creating the SQLite file airflow.cfg's default names).
NO_METADATA_DATABASE = "postgresql://no-metadata-database-on-workers@127.0.0.1:1/none"
#: Settings the other components hold and a worker never gets (as docker-compose.yaml's airflow-worker),
#: nor their ``_CMD`` / ``_SECRET`` forms.
WORKER_WITHHELD = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "TIKTOK_PG_SERVER",
    "TIKTOK_DAG_ROLE_PASSWORD",
)
#: Variables of this process that its children must not inherit.
_PARENT_ONLY: set[str] = {"_AIRFLOW_PROCESS_CONTEXT"}


@dataclass(frozen=True)
class Component:
    """One Airflow process: its ``airflow`` subcommand, as the docker-compose service runs it."""

    name: str
    command: tuple[str, ...]
    service: str


AIRFLOW_COMPONENTS: tuple[Component, ...] = (
    Component("api-server", ("api-server",), "airflow-apiserver"),
    Component("scheduler", ("scheduler",), "airflow-scheduler"),
    Component("dag-processor", ("dag-processor",), "airflow-dag-processor"),
    Component("triggerer", ("triggerer",), "airflow-triggerer"),
)
CELERY_WORKER = Component("celery-worker", ("celery", "worker"), "airflow-worker")
#: The simulator as the docker-compose ``tiktok-sim`` service runs it: ``python -m tiktok_sim``.
SIMULATOR_MODULE = "tiktok_sim"


def components(executor: str) -> tuple[Component, ...]:
    """Return the Airflow processes a stack with ``executor`` runs."""
    return AIRFLOW_COMPONENTS + ((CELERY_WORKER,) if executor == "CeleryExecutor" else ())


@dataclass(frozen=True)
class Stack:
    """Where one stack lives: its settings, AIRFLOW_HOME, executor and API port."""

    settings: local_settings.Settings
    executor: str
    api_port: int

    @property
    def home(self) -> Path:
        return self.settings.airflow_home

    @property
    def run_dir(self) -> Path:
        return self.home / "up"

    @property
    def url(self) -> str:
        return f"http://{API_HOST}:{self.api_port}"

    @property
    def passwords_file(self) -> Path:
        return self.home / PASSWORDS_FILE

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"


def stack_environment(s: local_settings.Settings, api_port: int, executor: str) -> dict[str, str]:
    """Return what the stack adds to the local settings; values already in the environment win."""
    env = {
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{API_HOST}:{api_port}/execution/",
        "AIRFLOW__API__HOST": API_HOST,
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(s.airflow_home / PASSWORDS_FILE),
        "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:6379/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": RESULT_BACKEND,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
        # The scheduler evaluates Deadline Alerts (tiktok_pipeline.deadlines); dag.test() tools turn them off.
        "AIRFLOW__TIKTOK_ALERTS__DEADLINE_HOURS": "6",
    }
    return {k: os.environ.get(k, v) for k, v in env.items()}


def configure(executor: str | None = None) -> Stack:
    """Put the stack's environment into ``os.environ`` (before Airflow is imported); return it."""
    s = local_settings.Settings.from_env()
    api_port = int(os.environ.get("AIRFLOW__API__PORT", DEFAULT_API_PORT))
    executor = executor or os.environ.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    os.environ["AIRFLOW__CORE__EXECUTOR"] = executor
    os.environ.update(stack_environment(s, api_port, executor))
    local_settings.apply(s, server_context=True)
    return Stack(settings=s, executor=executor, api_port=api_port)


def airflow_argv(stack: Stack, component: Component) -> list[str]:
    """Return the command line of ``component``: its compose command plus this machine's flags."""
    extra: list[str] = []
    if component.name == "api-server":
        extra = ["--host", API_HOST, "--port", str(stack.api_port)]
    elif component.name == "celery-worker":
        extra = ["--celery-hostname", f"tiktok-up-{stack.api_port}@%h"]
    return [sys.executable, "-m", "airflow", *component.command, *extra]


def simulator_argv(stack: Stack, client_key: str, *, accounts: int, videos: int) -> list[str]:
    s = stack.settings
    return [
        sys.executable, "-m", SIMULATOR_MODULE,
        "--host", s.sim_host, "--port", str(s.sim_port),
        "--seed", str(SEED), "--accounts", str(accounts), "--videos", str(videos),
        "--client-key", client_key,
    ]  # fmt: skip


# -- processes ---------------------------------------------------------------------------------


def _read_pid_file(path: Path) -> tuple[int, int] | None:
    try:
        pid, start = path.read_text().split()
        return int(pid), int(start)
    except (OSError, ValueError):
        return None


def running(stack: Stack, names: list[str]) -> dict[str, int | None]:
    """Return name -> pid of each process that is running (``None`` for those that are not)."""
    result: dict[str, int | None] = {}
    for name in names:
        recorded = _read_pid_file(stack.pid_file(name))
        proc = _proc(recorded[0]) if recorded else None
        result[name] = proc.pid if proc and recorded and proc.start == recorded[1] and not proc.zombie else None
    return result


def _stack_processes(stack: Stack, names: list[str]) -> list[int]:
    """Every live process of the stack: the sessions start created, and anything they spawned.

    Each component leads its own session. A session id cannot be reused while any process is in
    that session, so every process of a recorded session is ours unless the leader's pid now
    belongs to another process (its start time differs): that session ended long ago.
    """
    table = _processes()
    sessions = set()
    for name in names:
        recorded = _read_pid_file(stack.pid_file(name))
        if recorded and (recorded[0] not in table or table[recorded[0]].start == recorded[1]):
            sessions.add(recorded[0])
    ours = {p.pid for p in table.values() if p.session in sessions}
    grew = True
    while grew:  # children that started sessions of their own
        more = {p.pid for p in table.values() if p.ppid in ours and p.pid not in ours}
        ours |= more
        grew = bool(more)
    ours.discard(os.getpid())
    return sorted(ours)


def _child_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PARENT_ONLY}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _withheld_from_workers(name: str) -> bool:
    if name == "AIRFLOW__CORE__SQL_ALCHEMY_CONN":  # the option's old section, still read
        return True
    return any(name == withheld or name.startswith(f"{withheld}_") for withheld in WORKER_WITHHELD)


def worker_environment(env: Mapping[str, str]) -> dict[str, str]:
    """Return the celery worker's environment: ``env`` less the metadata database, Fernet key and JWT secret.

    In Airflow 3 a task reaches Airflow only through the API server's execution API, with the token
    the scheduler signed for it, and gets connections and variables from there decrypted; the
    worker needs none of these (see docker-compose.yaml). Its metadata URL points at a server that
    does not exist, so anything that still tried the database would fail, not fall back to SQLite.
    """
    worker = {k: v for k, v in env.items() if not _withheld_from_workers(k)}
    worker["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = NO_METADATA_DATABASE
    # setproctitle (Celery's and the task supervisor's process titles) would overwrite what
    # /proc/<pid>/environ shows; keep it readable, so what a worker holds can be checked.
    worker["SPT_NOENV"] = "1"
    return worker


def _spawn(stack: Stack, name: str, argv: list[str], env: Mapping[str, str]) -> int:
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    with stack.log_file(name).open("ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv[1:])}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=local_settings.ROOT,
            start_new_session=True,  # its own session: stop finds everything it spawns by it
        )
    proc = _proc(process.pid)
    stack.pid_file(name).write_text(f"{process.pid} {proc.start if proc else 0}\n")
    return process.pid


def _kill(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop(stack: Stack, *, timeout: float = 30.0) -> list[str]:
    """Stop every process of the stack (SIGTERM, then SIGKILL after ``timeout``); return what ran."""
    names = sorted(p.stem for p in stack.run_dir.glob("*.pid")) if stack.run_dir.exists() else []
    leaders = {name: pid for name, pid in running(stack, names).items() if pid is not None}
    known: dict[int, int] = {}  # pid -> start time of every process of the stack seen so far

    def survivors() -> list[int]:
        """What is still alive of the stack, including orphans that left its sessions."""
        for pid in _stack_processes(stack, names):
            if (proc := _proc(pid)) is not None:
                known.setdefault(pid, proc.start)
        return [pid for pid, start in known.items() if (p := _proc(pid)) and not p.zombie and p.start == start]

    survivors()
    _kill(list(leaders.values()), signal.SIGTERM)  # leaders first: each shuts its children down in order
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(running(stack, names).values()):
        survivors()
        time.sleep(0.2)
    _kill(survivors(), signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and survivors():
        time.sleep(0.2)
    for _ in range(50):  # whatever ignored SIGTERM
        left = survivors()
        if not left:
            break
        _kill(left, signal.SIGKILL)
        time.sleep(0.1)
    for name in names:
        stack.pid_file(name).unlink(missing_ok=True)
    return sorted(leaders)


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- the API -------------------------------------------------------------------------------------


class StartError(RuntimeError):
    """The stack did not come up; the message says which process and where its log is."""


def api_answers(url: str) -> bool:
    """The api-server answers on its public API and on the execution API the tasks use."""
    return all(requests.get(f"{url}{path}", timeout=10).ok for path in ("/api/v2/monitor/health", "/execution/health"))


def api_token(url: str, username: str, password: str) -> str:
    """Log in to the API (simple auth manager) and return a bearer token."""
    answer = requests.post(f"{url}/auth/token", json={"username": username, "password": password}, timeout=30)
    answer.raise_for_status()
    return answer.json()["access_token"]


def _api_get(url: str, path: str, token: str) -> Any:
    answer = requests.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    answer.raise_for_status()
    return answer.json()


def expected_dags(dags_folder: str | Path) -> list[str]:
    """Return the dag_ids of ``dags/``: one file a DAG, named after its dag_id."""
    return sorted(p.stem for p in Path(dags_folder).glob("*.py") if not p.name.startswith("_"))


def _wait(what: str, check: Any, stack: Stack, names: list[str], timeout: float) -> Any:
    """Call ``check`` until it returns a truthy value; fail if a process dies or time runs out."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        dead = [name for name, pid in running(stack, names).items() if pid is None]
        if dead:
            raise StartError(
                f"{dead[0]} exited while waiting for {what}; its log ({stack.log_file(dead[0])}) ends with:\n"
                + _tail(stack.log_file(dead[0]))
            )
        try:
            result = check()
            if result:
                return result
        except (requests.RequestException, KeyError, ValueError) as exc:
            last_error = exc
        time.sleep(0.5)
    raise StartError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")


def wait_until_ready(stack: Stack, password: str, names: list[str], timeout: float) -> dict[str, Any]:
    """Wait for a login, then for every DAG of dags/ parsed without import errors; return what was seen.

    The API server answers already: :func:`start` waited for it before it started the rest.
    """
    started = time.monotonic()

    def left() -> float:
        return max(1.0, timeout - (time.monotonic() - started))

    token = _wait("a login", lambda: api_token(stack.url, ADMIN_USER, password), stack, names, left())
    wanted = expected_dags(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])

    def parsed() -> dict[str, Any] | None:
        errors = _api_get(stack.url, "/api/v2/importErrors", token)
        if errors["total_entries"]:
            problems = "; ".join(f"{e['filename']}: {e['stack_trace'][-300:]}" for e in errors["import_errors"])
            raise StartError(f"DAG import errors: {problems}")
        dags = {d["dag_id"] for d in _api_get(stack.url, "/api/v2/dags?limit=100", token)["dags"]}
        return {"dags": sorted(dags)} if set(wanted) <= dags else None

    seen = _wait(f"the DAGs {', '.join(wanted)}", parsed, stack, names, left())
    hooks = _api_get(stack.url, "/ui/connections/hook_meta", token)
    seen["connection_types"] = {h["connection_type"]: h["hook_name"] for h in hooks}
    if "tiktok" not in seen["connection_types"]:
        raise StartError("the api-server does not know the 'tiktok' connection type; is the provider installed?")
    return seen


# -- the simulator -------------------------------------------------------------------------------


def _tiktok_connection() -> Any:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection("tiktok_default")
    except AirflowNotFoundException:
        raise StartError("the tiktok_default connection is missing; run `make bootstrap` first") from None


def start_simulator(stack: Stack, conn: Any, *, accounts: int, videos: int, timeout: float = 30.0) -> int:
    """Start the simulator with the connection's client key and secret; wait until it answers."""
    s = stack.settings
    env = {k: v for k, v in _child_environment().items() if not k.startswith("TIKTOK_SIM_")}
    env["TIKTOK_SIM_CLIENT_SECRET"] = conn.password or ""  # through the environment, never argv
    argv = simulator_argv(stack, conn.login or "", accounts=accounts, videos=videos)
    _spawn(stack, SIMULATOR, argv, env)
    _wait(
        f"the simulator on {s.sim_url}",
        lambda: requests.get(f"{s.sim_url}/_sim/health", timeout=2).ok,
        stack,
        [SIMULATOR],
        timeout,
    )
    return running(stack, [SIMULATOR])[SIMULATOR] or 0


def points_at_simulator(conn: Any, s: local_settings.Settings) -> bool:
    host = urlsplit(conn.host or "")
    return (host.hostname, host.port) == (s.sim_host, s.sim_port)


def connect_simulator_accounts(s: local_settings.Settings, conn: Any) -> list[str]:
    """Connect every simulator account, as if its owner had approved; return their display names.

    The grants go into the token store of ``conn``'s hook (checked first, as the connect DAG
    does); the profiles are left to the first ``tiktok_profile_snapshot`` run.
    """
    from tiktok_pipeline.common import TIKTOK_CONN_ID
    from tiktok_pipeline.hooks import display_hook
    from tiktok_sim import testing
    from tiktok_tools.simaccounts import connect_existing_sim_accounts

    store = display_hook(TIKTOK_CONN_ID).token_store
    store.check_ready()
    sim = testing.connect(s.sim_url, conn.login or "", conn.password or "")
    accounts = sim.admin.accounts()
    connect_existing_sim_accounts(sim, store, accounts)
    return [printable(account.get("display_name") or account["open_id"], limit=40) for account in accounts]


def _names(names: list[str], shown: int = 5) -> str:
    """The first ``shown`` names, then how many more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


# -- commands ------------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(f"up: {text}", flush=True)


@contextlib.contextmanager
def _start_lock(stack: Stack) -> Iterator[None]:
    """Hold the stack's start lock: one `up start` at a time, or each would stop the other's processes."""
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    with (stack.run_dir / "start.lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise StartError(
                f"another `up start` (pid {holder}) is starting this stack; wait for it, or `up stop` it"
            ) from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


#: Signals that end `up start` (timeout, a CI job's cancel, a closed terminal) as Ctrl-C does: it stops what it started.
_ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _ending_signals_clean_up() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into SystemExit, so that start's clean-up runs; ignore them during it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def end(signum: int, _frame: Any) -> None:
        for sig in _ENDING_SIGNALS:  # a second one must not interrupt the clean-up
            signal.signal(sig, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    # Left ignored where they are (`nohup make up`): the processes start spawns would inherit it.
    wanted = [sig for sig in _ENDING_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, end) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def start(stack: Stack, *, accounts: int, videos: int, timeout: float) -> int:
    with _ending_signals_clean_up(), _start_lock(stack):
        return _start(stack, accounts=accounts, videos=videos, timeout=timeout)


def _start(stack: Stack, *, accounts: int, videos: int, timeout: float) -> int:
    names = [SIMULATOR] + [c.name for c in components(stack.executor)]
    state = running(stack, names)
    if all(state.values()):
        _say(f"already running ({', '.join(names)}); the UI is at {stack.url}")
        return 0
    if any(state.values()):
        _say("some processes of an earlier start are still running; stopping them first")
        stop(stack)
    s = stack.settings
    for what, host, port in (("the API server", API_HOST, stack.api_port), ("the simulator", s.sim_host, s.sim_port)):
        if _port_in_use(host, port):
            raise StartError(f"port {port} ({what}) is in use on {host}; stop what uses it, or choose another port")

    began = time.monotonic()

    def left() -> float:
        """What is left of ``timeout``: it bounds the whole start, not each of its waits."""
        return max(1.0, timeout - (time.monotonic() - began))

    password = bootstrap.ensure_admin_login(stack.passwords_file, ADMIN_USER)
    conn = _tiktok_connection()
    try:
        start_simulator(stack, conn, accounts=accounts, videos=videos, timeout=min(30.0, left()))
        if points_at_simulator(conn, s):
            connected = connect_simulator_accounts(s, conn)
            sim_note = f"{len(connected)} simulated accounts connected ({_names(connected)})"
        else:
            sim_note = f"tiktok_default points at {conn.host}, so no simulated account was connected"
        env = _child_environment()
        # The api-server first: the tasks (the LocalExecutor's, in the scheduler; Celery's, in the
        # worker) reach Airflow only through its execution API. Started together, the first daily
        # runs' tasks raced it, retried, and were killed (ci21), as compose's worker waits for it too.
        api_server, *others = components(stack.executor)
        _spawn(stack, api_server.name, airflow_argv(stack, api_server), env)
        _wait("the API server", lambda: api_answers(stack.url), stack, [SIMULATOR, api_server.name], left())
        for component in others:
            own = worker_environment(env) if component is CELERY_WORKER else env
            _spawn(stack, component.name, airflow_argv(stack, component), own)
        seen = wait_until_ready(stack, password, names, left())
    except BaseException:
        stop(stack)
        raise
    took = time.monotonic() - began
    _say(f"Airflow is up in {took:.0f}s ({stack.executor}: {', '.join(c.name for c in components(stack.executor))})")
    _say(f"simulator on {s.sim_url}: {sim_note}")
    _say(f"DAGs: {', '.join(seen['dags'])} (no import errors)")
    _say("")
    _say(f"  UI        {stack.url}")
    _say(f"  log in    {ADMIN_USER} / {password}")
    _say(f"            (generated once, kept in {stack.passwords_file})")
    _say("")
    _say(f"logs in {stack.run_dir}/*.log; stop it all with `make down`")
    return 0


def status(stack: Stack) -> int:
    names = [SIMULATOR] + [c.name for c in components(stack.executor)]
    names += sorted({p.stem for p in stack.run_dir.glob("*.pid")} - set(names)) if stack.run_dir.exists() else []
    state = running(stack, names)
    for name, pid in state.items():
        _say(f"{name:<14} {'running, pid ' + str(pid) if pid else 'stopped'}")
    if url := pgserver.running_url(stack.home):
        held = ", ".join(pgserver.holders(stack.home)) or "nobody"
        _say(f"{'postgres':<14} embedded, on {url.rsplit('@', 1)[1]} (held by {held})")
    if state.get("api-server"):
        with contextlib.suppress(requests.RequestException, ValueError):
            health = requests.get(f"{stack.url}/api/v2/monitor/health", timeout=15).json()
            summary = ", ".join(f"{k}: {v.get('status')}" for k, v in health.items() if isinstance(v, dict))
            _say(f"health         {summary}")
        _say(f"UI             {stack.url}")
    return 0 if all(state.values()) else 3


@contextlib.contextmanager
def _errors_to_exit() -> Iterator[None]:
    try:
        yield
    except StartError as exc:
        print(f"up: failed: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tiktok_tools.up", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--executor", choices=EXECUTORS, help="default: $AIRFLOW__CORE__EXECUTOR or LocalExecutor")
    parser.add_argument("--sim-accounts", type=int, default=ACCOUNTS, help="simulated accounts (default: the demo's)")
    parser.add_argument("--sim-videos", type=int, default=VIDEOS, help="videos of the first simulated account")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the stack to be ready")
    args = parser.parse_args(argv)
    if "AIRFLOW__LOGGING__LOGGING_LEVEL" not in os.environ:  # quiet here, not in the components' logs
        os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
        _PARENT_ONLY.add("AIRFLOW__LOGGING__LOGGING_LEVEL")
    home = local_settings.Settings.from_env().airflow_home
    with _errors_to_exit():
        if args.command == "start":
            try:
                pgserver.ensure(home, PG_HOLDER)  # before configure(): the stack's settings follow it
            except pgserver.EmbeddedPostgresError as exc:
                raise StartError(str(exc)) from None
        stack = configure(args.executor)
        if args.command == "start":
            try:
                return start(stack, accounts=args.sim_accounts, videos=args.sim_videos, timeout=args.timeout)
            except BaseException:
                release_postgres(stack)
                raise
        if args.command == "stop":
            stopped = stop(stack)
            _say(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
            release_postgres(stack)
            return 0
        return status(stack)


def release_postgres(stack: Stack) -> None:
    """Let go of the embedded Postgres server; it stops unless a demo still uses it."""
    if pgserver.release(stack.home, PG_HOLDER):
        _say(f"stopped the embedded PostgreSQL server (its data stays in {pgserver.Embedded(stack.home).pgdata})")
    elif pgserver.running_url(stack.home):
        _say(f"the embedded PostgreSQL server keeps running for {', '.join(pgserver.holders(stack.home))}")


if __name__ == "__main__":
    sys.exit(main())
