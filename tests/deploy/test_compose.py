"""docker-compose.yaml and the Dockerfile, checked as far as can be done without Docker.

- The compose file, interpolated from .env.example the way Compose does it, is valid against the
  Compose Specification's JSON schema (fixtures/compose-spec.json), and its references hold.
- Each Airflow service runs the command `make up` runs for the same component, and Airflow's CLI
  accepts it; airflow-init runs `make bootstrap`'s module; the simulator service runs the module
  `make up` starts, with options the simulator accepts.
- It sets every Airflow setting the local path sets (except this machine's paths and ports).
- Every variable it reads is documented in .env.example; no secret has a default anywhere.
- The Dockerfile builds on apache/airflow at the version and Python that the lock is made for.
- The DAGs' warehouse connection logs in as a role of its own, not as the Postgres superuser;
  airflow-init's command, run with its environment on this machine's Postgres, creates that role
  (rows of schema tiktok only) and points ``tiktok_warehouse`` at it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from sqlalchemy.engine import make_url

from tiktok_ops import bootstrap
from tiktok_ops import settings as local_settings
from tiktok_ops.settings import ROOT
from tiktok_tools import bootstrap as tools_bootstrap
from tiktok_tools import up

COMPOSE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = Path(__file__).parent / "fixtures" / "compose-spec.json"
SECRET = re.compile(r"PASSWORD|SECRET|_KEY$")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME; $$ is a literal $.
VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_]\w*))"
)


class MissingVariable(ValueError):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Substitute variables as Compose does (its interpolation rules, one level deep)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        value = env.get(name)
        unset = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-") and unset:
            return arg
        if op in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        return value or ""

    return VARIABLE.sub(substitute, text)


def variables(text: str) -> dict[str, set[str]]:
    """Return each variable the text reads, with the operators it is read with ('' for none)."""
    found: dict[str, set[str]] = {}
    for match in VARIABLE.finditer(text):
        name = match.group("braced") or match.group("bare")
        if name:
            found.setdefault(name, set()).add(match.group("op") or "")
    return found


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^[A-Z_]+=", line))
    return {name: value for name, value in pairs}


def filled_env() -> dict[str, str]:
    """.env.example with a made-up value for each secret, as a user's .env would have."""
    return {name: value or f"test-{name.lower()}" for name, value in env_example().items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(interpolate(COMPOSE.read_text(), filled_env()))


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def local_stack() -> up.Stack:
    return up.Stack(settings=local_settings.Settings.from_env(), executor="CeleryExecutor", api_port=8080)


def test_the_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    from jsonschema import Draft7Validator

    schema = json.loads(SCHEMA.read_text())
    Draft7Validator.check_schema(schema)
    errors = sorted(Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
    # The schema can fail: a typo in a key is caught.
    broken = {**compose, "services": {**compose["services"], "redis": {**compose["services"]["redis"], "comand": []}}}
    assert any("comand" in e.message for e in Draft7Validator(schema).iter_errors(broken))


def test_references_between_services_and_volumes_hold(compose: dict[str, Any]) -> None:
    services, volumes = compose["services"], set(compose["volumes"])
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            assert source in volumes or source.startswith((".", "/")), f"{name} mounts undeclared {source}"
        if "network_mode" in service:
            assert service["network_mode"].removeprefix("service:") in services
    profiled = {name for name, service in services.items() if service.get("profiles")}
    assert profiled == {"tiktok-sim"}, "only the simulator is optional"


def test_each_airflow_service_runs_what_make_up_runs(compose: dict[str, Any]) -> None:
    from airflow.cli import cli_parser

    parser = cli_parser.get_parser()
    services = compose["services"]
    components = up.components("CeleryExecutor")
    assert {c.service for c in components} | {"airflow-init"} == {s for s in services if s.startswith("airflow-")}
    assert {c.name for c in up.components("LocalExecutor")} == {"api-server", "scheduler", "dag-processor", "triggerer"}
    for component in components:
        command = argv(services[component.service]["command"])
        assert command == list(component.command), component.service
        local = up.airflow_argv(local_stack(), component)
        assert local[:3] == [sys.executable, "-m", "airflow"]
        assert local[3 : 3 + len(command)] == command, f"make up runs {local[3:]} for {component.service}"
        parser.parse_args(command)  # Airflow's CLI knows it (exits on an unknown command or flag)
        parser.parse_args(local[3:])
    for name in ("airflow-dag-processor", "airflow-triggerer"):  # their health checks are CLI commands too
        check = argv(services[name]["healthcheck"]["test"][1].replace('"$${HOSTNAME}"', "host"))
        assert check[0] == "airflow"
        parser.parse_args(check[1:])


def test_the_init_service_runs_make_bootstrap(compose: dict[str, Any]) -> None:
    init = compose["services"]["airflow-init"]
    assert argv(init["command"]) == ["python", "-m", "tiktok_ops.bootstrap"]
    recipe = re.search(r"^bootstrap:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    # `make bootstrap` runs the same bootstrap through the tools, which may start an embedded
    # server first; the image has no tools, so production runs tiktok_ops.bootstrap itself.
    assert recipe and recipe.group(1).split()[1:] == ["-m", "tiktok_tools.bootstrap"]
    assert "bootstrap.main(" in Path(tools_bootstrap.__file__).read_text()
    # Everything bootstrap reads from the environment to configure a deployment is given to it.
    inputs = set(re.findall(r'os\.environ\.get\("([A-Z_]+)"', Path(bootstrap.__file__).read_text()))
    assert inputs <= set(init["environment"]), inputs - set(init["environment"])
    for service in ("airflow-init", "airflow-apiserver"):  # one writes the login, the other reads it
        assert "airflow-auth:/opt/airflow/auth" in compose["services"][service]["volumes"]
    passwords = compose["x-airflow-common"]["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert passwords.startswith("/opt/airflow/auth/")


def test_the_simulator_service_runs_what_make_up_starts(compose: dict[str, Any]) -> None:
    from tiktok_sim.cli import serve_parser
    from tiktok_sim.config import OPTIONS_BY_NAME

    sim = compose["services"]["tiktok-sim"]
    command = argv(sim["command"])
    local = up.simulator_argv(local_stack(), "key", accounts=3, videos=10)
    assert command[:3] == ["python", "-m", up.SIMULATOR_MODULE] and local[1:3] == ["-m", up.SIMULATOR_MODULE]
    options = serve_parser().parse_args(command[3:])  # the simulator accepts every flag
    assert int(options.seed) == int(local[local.index("--seed") + 1]), "the demo's simulated world"
    assert options.host == "0.0.0.0", "the workers reach it by its service name"
    assert not {"--client-secret"} & set(command), "secrets go through the environment"
    assert set(sim["environment"]) == {OPTIONS_BY_NAME["client_key"].env, OPTIONS_BY_NAME["client_secret"].env}
    assert "network_mode" not in sim, "any number of workers reach it over the compose network"
    init_env = compose["services"]["airflow-init"]["environment"]
    assert "TIKTOK_INSECURE_HTTP_HOSTS" in init_env, "the opt-in that lets tokens reach http://tiktok-sim"


def test_it_sets_every_airflow_setting_the_local_path_sets(compose: dict[str, Any]) -> None:
    s = local_settings.Settings.from_env()
    local = set(local_settings.airflow_environment(s)) | set(up.stack_environment(s, 8080, "CeleryExecutor"))
    # Paths and sizes of this machine; in the image they are its defaults or its ENV.
    machine = {
        "AIRFLOW_HOME",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER",
        "AIRFLOW__API__HOST",
        "AIRFLOW__API__PORT",
        "AIRFLOW__API__WORKERS",
        "AIRFLOW__CORE__PARALLELISM",
        "AIRFLOW__CORE__AUTH_MANAGER",
    }
    common = compose["x-airflow-common"]["environment"]
    missing = local - machine - set(common)
    assert not missing, f"set locally but not in docker-compose.yaml: {sorted(missing)}"
    assert common["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert (
        common["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        and "@redis:6379/" in common["AIRFLOW__CELERY__BROKER_URL"]
    )
    api = compose["services"]["airflow-apiserver"]
    container_port = api["ports"][0].rsplit(":", 1)[1]
    assert common["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://airflow-apiserver:{container_port}/execution/"
    assert "AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags" in DOCKERFILE.read_text()


def test_the_workers_hold_neither_the_metadata_database_nor_the_fernet_key(compose: dict[str, Any]) -> None:
    """Workers reach Airflow only through the execution API: no metadata URL, Fernet key or JWT secret."""
    services = compose["services"]
    worker = services["airflow-worker"]["environment"]  # as Compose sees it, after the merge keys
    common = compose["x-airflow-common"]["environment"]
    # What `make up` withholds from its worker is withheld here too, and the others do have it.
    for name in up.WORKER_WITHHELD:
        assert name not in worker, f"airflow-worker has {name}"
    assert {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__FERNET_KEY"} <= set(up.WORKER_WITHHELD)
    assert not [key for key in worker if re.search("SQL_ALCHEMY_CONN|FERNET_KEY|JWT_SECRET", key)], sorted(worker)
    for service in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        env = services[service]["environment"]
        assert {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__FERNET_KEY"} <= set(env), service
    # No value carries the metadata owner's password or the Fernet key under another name.
    secrets = {filled_env()[name] for name in ("POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET")}
    assert not [key for key, value in worker.items() if any(secret in str(value) for secret in secrets)]
    # The image's entrypoint would wait for a metadata database (`airflow db check`): none to wait for.
    assert worker["CONNECTION_CHECK_MAX_COUNT"] == "0"

    # What a worker does need: the broker, a result backend that is not a database, the execution API.
    backend = worker["AIRFLOW__CELERY__RESULT_BACKEND"]
    broker = worker["AIRFLOW__CELERY__BROKER_URL"]
    assert backend.startswith("redis://") and not backend.startswith("db+"), backend
    assert filled_env()["REDIS_PASSWORD"] in backend, "Redis asks for its password"
    assert backend.rsplit("/", 1)[0] == broker.rsplit("/", 1)[0] and backend != broker, "another Redis database"
    assert worker["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == common["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    assert worker["AIRFLOW__API__SECRET_KEY"] == common["AIRFLOW__API__SECRET_KEY"], "it serves running tasks' logs"
    # The scheduler reads the results where the workers write them.
    for name, service in services.items():
        if name.startswith("airflow-"):
            assert service["environment"]["AIRFLOW__CELERY__RESULT_BACKEND"] == backend, name
            assert service["environment"]["AIRFLOW__CELERY__BROKER_URL"] == broker, name


def test_every_variable_is_documented_and_no_secret_has_a_default() -> None:
    used = variables(COMPOSE.read_text())
    documented = env_example()
    assert set(used) == set(documented), (
        f"undocumented: {sorted(set(used) - set(documented))}; unused: {sorted(set(documented) - set(used))}"
    )
    secrets = {name for name in used if SECRET.search(name)}
    assert {"POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "TIKTOK_CLIENT_SECRET", "AIRFLOW_ADMIN_PASSWORD"} <= secrets
    for name in secrets:
        assert used[name] <= {":?", ""} and ":?" in used[name], f"{name} is read with {used[name]}"
        assert documented[name] == "", f".env.example gives {name} a value"
    for name in secrets:  # and Compose refuses to start without each of them
        env = {k: v for k, v in filled_env().items() if k != name}
        with pytest.raises(MissingVariable, match=name):
            interpolate(COMPOSE.read_text(), env)


def test_the_dockerfile_extends_the_airflow_image_the_lock_is_made_for() -> None:
    dockerfile = DOCKERFILE.read_text()
    pin = re.search(r"^apache-airflow==(\S+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    python = re.search(r"--python-version (\S+)", (ROOT / "Makefile").read_text())
    assert pin and python
    base = re.search(r"^ARG AIRFLOW_BASE_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert base and base.group(1) == f"apache/airflow:{pin.group(1)}-python{python.group(1)}"
    assert re.search(r"^FROM \$\{AIRFLOW_BASE_IMAGE\}$", dockerfile, re.MULTILINE)
    assert re.search(r"-r \S*requirements\.txt \\\n\s+-c \S*requirements\.lock", dockerfile)
    assert re.search(r"pip install --no-cache-dir --no-deps /opt/airflow/src", dockerfile)
    copied = set(re.findall(r"^COPY --chown=\S+ (.+) \S+$", dockerfile, re.MULTILINE))
    sources = {path for line in copied for path in line.split()}
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for path in sources:  # each is in the build context: .dockerignore excludes all but these
        assert (ROOT / path).exists(), path
        assert f"!{path}" in ignore or f"!{path}/" in ignore, f".dockerignore leaves {path} out of the build context"
    assert {"dags", "plugins", "include", "pyproject.toml", "requirements.lock"} <= sources


def test_the_dags_log_in_to_the_warehouse_as_their_own_role_not_the_superuser(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    superuser = services["postgres"]["environment"]["POSTGRES_USER"]
    init_env = services["airflow-init"]["environment"]
    for name, service in services.items():
        env = service.get("environment", {})
        # Only airflow-init holds the owner's URL and the role's password; the workers read the
        # connection airflow-init wrote, and nothing in their environment overrides it.
        if name != "airflow-init":
            assert not {"TIKTOK_PG_SERVER", "TIKTOK_DAG_ROLE_PASSWORD"} & set(env), name
        assert not any(key.startswith("AIRFLOW_CONN_") for key in env), f"{name} overrides a connection"
    assert "TIKTOK_DAG_ROLE_PASSWORD" in variables(COMPOSE.read_text())
    # What airflow-init writes into tiktok_warehouse, which every scheduler and worker then uses.
    for key in list(os.environ):
        if key.startswith(("TIKTOK_", "AIRFLOW_HOME")):
            monkeypatch.delenv(key)
    for key, value in init_env.items():
        if key.startswith("TIKTOK_"):
            monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    s = local_settings.Settings.from_env()
    assert make_url(s.pg_server).username == superuser, "migrations run as the owner"
    connection = bootstrap._warehouse_connection(s)
    assert connection["host"] == "postgres" and connection["schema"] == init_env["TIKTOK_WAREHOUSE_DB"]
    assert connection["login"] == init_env["TIKTOK_DAG_ROLE"] == env_example()["TIKTOK_DAG_ROLE"]
    assert connection["login"] != superuser
    assert connection["password"] == filled_env()["TIKTOK_DAG_ROLE_PASSWORD"]


def _admin(database: str = "postgres") -> Any:
    conn = psycopg2.connect(f"{local_settings.Settings.from_env().pg_server}/{database}")
    conn.autocommit = True
    return conn


def _query(database: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = _admin(database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_airflow_init_creates_the_dag_role_and_points_the_warehouse_connection_at_it(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """airflow-init's command and TIKTOK_* environment, on this machine's Postgres and databases of its own."""
    from cryptography.fernet import Fernet

    local = local_settings.Settings.from_env()
    airflow_db, warehouse_db = f"{local.airflow_db}_init", f"{local.warehouse_db}_init"
    role = f"{warehouse_db}_dags"  # the compose default, tiktok_dags, may exist on a shared server
    init = compose["services"]["airflow-init"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW", "TIKTOK_"))}
    env.update({k: str(v) for k, v in init["environment"].items() if k.startswith("TIKTOK_")})
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins")]),
        AIRFLOW_HOME=str(tmp_path),
        TIKTOK_PG_SERVER=local.pg_server,
        TIKTOK_AIRFLOW_DB=airflow_db,
        TIKTOK_WAREHOUSE_DB=warehouse_db,
        TIKTOK_DAG_ROLE=role,
    )
    owner = make_url(local.pg_server).username
    command = argv(init["command"])
    assert command[:1] == ["python"]

    def drop() -> None:
        for name in (airflow_db, warehouse_db):
            _query("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _query("postgres", f'DROP ROLE IF EXISTS "{role}"')

    def init_run(password: str) -> str:
        done = subprocess.run(
            [sys.executable, *command[1:]],
            env={**env, "TIKTOK_DAG_ROLE_PASSWORD": password},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert password not in done.stdout + done.stderr, "the role's password was printed"
        return done.stdout + done.stderr

    def stored_connection() -> tuple[str, str]:
        [(login, password)] = _query(
            airflow_db, "SELECT login, password FROM connection WHERE conn_id = 'tiktok_warehouse'"
        )
        fernet = Fernet((tmp_path / "fernet.key").read_text().strip().encode())
        return login, fernet.decrypt(password.encode()).decode()

    drop()
    try:
        init_run(env["TIKTOK_DAG_ROLE_PASSWORD"])
        assert _query(
            "postgres", "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s", role
        ) == [(False, False, False)]
        assert stored_connection() == (role, env["TIKTOK_DAG_ROLE_PASSWORD"])
        # The migrations ran as the owner: it owns every table; the role only got rows.
        owners = _query(warehouse_db, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'tiktok'")
        assert owners == [(owner,)]
        [(dml, ddl)] = _query(
            warehouse_db,
            "SELECT has_table_privilege(%s, 'tiktok.videos', 'INSERT, UPDATE, DELETE, SELECT'),"
            " has_schema_privilege(%s, 'tiktok', 'CREATE')",
            role,
            role,
        )
        assert (dml, ddl) == (True, False)
        assert _query("postgres", "SELECT has_database_privilege(%s, %s, 'CONNECT')", role, airflow_db) == [(False,)]

        # A new password in .env and airflow-init again: the role and the connection follow it.
        init_run("rotated-password")
        assert stored_connection() == (role, "rotated-password")
        # A connection an older airflow-init made for the owner moves to the role.
        _query(airflow_db, "UPDATE connection SET login = %s WHERE conn_id = 'tiktok_warehouse'", owner)
        output = init_run("rotated-password")
        assert stored_connection() == (role, "rotated-password")
        assert f"logs in as {role} now" in output
        # One set by hand to another server is left alone.
        _query(airflow_db, "UPDATE connection SET host = 'warehouse.example' WHERE conn_id = 'tiktok_warehouse'")
        init_run("third-password")
        assert _query(airflow_db, "SELECT host FROM connection WHERE conn_id = 'tiktok_warehouse'") == [
            ("warehouse.example",)
        ]
        assert stored_connection() == (role, "rotated-password")
    finally:
        drop()
