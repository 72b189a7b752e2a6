"""One place that says where Airflow, the warehouse and the simulator live on this machine.

Every entry point (`python -m tiktok_ops.bootstrap`, the tools of ``tools/tiktok_tools``, the
tests' conftest) calls :func:`apply` before it imports Airflow, so the Makefile, the tests and
`make up` agree. Each value can be overridden from the environment; the defaults are the machine's
local Postgres and the simulator.

Postgres is, in this order: ``TIKTOK_PG_SERVER``; the embedded server of this ``AIRFLOW_HOME``
while it runs (started by ``make demo`` / ``make up`` through ``tiktok_tools.pgserver`` when nothing
answers on 127.0.0.1:5432; found here by its files alone, so this shipped module imports no tool); the
local server at ``postgresql://postgres@127.0.0.1:5432``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


@dataclass(frozen=True)
class Settings:
    """Where things are; built from the environment with local defaults."""

    pg_server: str
    airflow_db: str
    warehouse_db: str
    sim_host: str
    sim_port: int
    airflow_home: Path
    #: The login role of the DAGs' ``tiktok_warehouse`` connection; default ``<warehouse_db>_dags``.
    dag_role_name: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("AIRFLOW_HOME", ROOT / ".airflow"))
        server = os.environ.get("TIKTOK_PG_SERVER") or embedded_server_url(home) or DEFAULT_PG_SERVER
        return cls(
            pg_server=server.rstrip("/"),
            airflow_db=os.environ.get("TIKTOK_AIRFLOW_DB", "airflow"),
            warehouse_db=os.environ.get("TIKTOK_WAREHOUSE_DB", "tiktok"),
            sim_host=os.environ.get("TIKTOK_SIM_HOST", "127.0.0.1"),
            sim_port=int(os.environ.get("TIKTOK_SIM_PORT", "8765")),
            airflow_home=home,
            dag_role_name=os.environ.get("TIKTOK_DAG_ROLE") or None,
        )

    @property
    def dag_role(self) -> str:
        """The role the DAGs log in as: DML on schema ``tiktok`` only (:mod:`tiktok_ops.dag_role`)."""
        return self.dag_role_name or f"{self.warehouse_db}_dags"

    def dag_role_password(self) -> str:
        """``TIKTOK_DAG_ROLE_PASSWORD``, else a random one kept in AIRFLOW_HOME (created once)."""
        return os.environ.get("TIKTOK_DAG_ROLE_PASSWORD") or _secret(self.airflow_home, "dag_role.secret", nbytes=24)

    def database_url(self, database: str, *, driver: str = "postgresql+psycopg2") -> str:
        _, _, rest = self.pg_server.partition("://")
        return f"{driver}://{rest}/{database}"

    @property
    def sim_url(self) -> str:
        return f"http://{self.sim_host}:{self.sim_port}"


#: Where an embedded server of an AIRFLOW_HOME keeps its data and its password (``tiktok_tools.pgserver``).
EMBEDDED_PGDATA = "postgres"
EMBEDDED_SECRET = "postgres.secret"
EMBEDDED_HOST = "127.0.0.1"
EMBEDDED_SUPERUSER = "postgres"


def embedded_postmaster(pgdata: Path) -> tuple[int, int] | None:
    """Return (pid, port) from ``postmaster.pid`` if that postmaster is alive, else None."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    comm = Path(f"/proc/{pid}/comm")
    if comm.parent.exists():  # Linux: the pid must still be a postgres (not a reused pid)
        try:
            return (pid, port) if comm.read_text().strip() == "postgres" else None
        except OSError:
            return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid, port


def embedded_server_url(home: Path) -> str | None:
    """Return the URL of the embedded server of ``home`` while it runs, else None (cheap: no connect)."""
    found = embedded_postmaster(home / EMBEDDED_PGDATA)
    if found is None:
        return None
    try:
        password = (home / EMBEDDED_SECRET).read_text().strip()
    except OSError:
        return None
    return f"postgresql://{EMBEDDED_SUPERUSER}:{password}@{EMBEDDED_HOST}:{found[1]}"


def _fernet_key(home: Path) -> str:
    """Return this installation's Airflow Fernet key, creating it once (kept out of the repo)."""
    from cryptography.fernet import Fernet

    path = home / "fernet.key"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(Fernet.generate_key().decode())
        path.chmod(0o600)
    return path.read_text().strip()


def _secret(home: Path, name: str, *, nbytes: int = 64) -> str:
    """Return a random secret kept in AIRFLOW_HOME, created once (Airflow wants 64+ bytes for JWTs)."""
    import secrets

    path = home / name
    if not path.exists() or len(path.read_text().strip()) < nbytes:
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(nbytes))
        path.chmod(0o600)
    return path.read_text().strip()


def airflow_environment(settings: Settings | None = None) -> dict[str, str]:
    """Return the AIRFLOW_* variables for running Airflow locally; values already set win."""
    s = settings or Settings.from_env()
    home = s.airflow_home
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": s.database_url(s.airflow_db),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__FERNET_KEY": _fernet_key(home),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret(home, "jwt.secret"),
        "AIRFLOW__API__SECRET_KEY": _secret(home, "api.secret"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://127.0.0.1:8080/execution/",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        # dag.test() (tests, demo, bench) crashes on a successful run of a DAG with a Deadline Alert
        # in Airflow 3.3.2 (apache/airflow#73428): no deadline here; `make up` sets one.
        "AIRFLOW__TIKTOK_ALERTS__DEADLINE_HOURS": "off",
    }
    return {k: os.environ.get(k, v) for k, v in env.items()}


def apply(settings: Settings | None = None, *, server_context: bool = False) -> Settings:
    """Put the local Airflow environment into ``os.environ`` (call before importing Airflow).

    :param server_context: for tools that run beside the scheduler (bootstrap, migrations, the
        demo): outside a task, Airflow's Task SDK then finds connections in the metadata database
        too, not only in ``AIRFLOW_CONN_*`` variables and secrets backends.
    """
    s = settings or Settings.from_env()
    os.environ.update(airflow_environment(s))
    pin_secret_echoing_loggers()
    if server_context:
        os.environ.setdefault("_AIRFLOW_PROCESS_CONTEXT", "server")
    return s


#: Loggers that keep DEBUG when DEBUG is asked for (see ``pin_secret_echoing_loggers``).
DEBUG_NAMESPACES = (
    "airflow",
    "task",
    "tiktok_provider",
    "tiktok_warehouse",
    "tiktok_pipeline",
    "tiktok_ops",
    "tiktok_tools",
)
#: Named loggers of the Task SDK's comms that print each message, secrets included, at DEBUG.
COMMS_NAMESPACES = ("supervisor", "airflow.sdk.execution_time")


def pin_secret_echoing_loggers() -> None:
    """Keep DEBUG logging from printing every secret: Airflow's task comms log each message at DEBUG.

    Under ``dag.test()`` the Task SDK's in-process comms (``InProcessSupervisorComms.send`` in
    ``airflow.sdk.execution_time.supervisor``) log every request at DEBUG -- including each
    ``mask_secret`` call with the secret in clear (the client secret, the Fernet key, every token),
    printed before the masker knows it. That logger has no name, so only the root level reaches it:
    when DEBUG is asked for, the root level is set to INFO and DEBUG is kept for the named loggers
    one debugs with (``DEBUG_NAMESPACES``), while the comms' named loggers stay at INFO. Call before
    Airflow configures logging; a ``namespace_levels`` already set is kept and wins.
    """
    if os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "").strip().upper() != "DEBUG":
        return
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "INFO"
    ours = [f"{name}=DEBUG" for name in DEBUG_NAMESPACES] + [f"{name}=INFO" for name in COMMS_NAMESPACES]
    given = os.environ.get("AIRFLOW__LOGGING__NAMESPACE_LEVELS", "").strip()
    os.environ["AIRFLOW__LOGGING__NAMESPACE_LEVELS"] = " ".join([*ours, given]).strip()
