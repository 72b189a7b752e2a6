"""Create the databases, migrate Airflow and the warehouse, add connections and the pool.

Idempotent: a second run changes nothing. Connections that already exist are left alone, so a
user who pointed ``tiktok_default`` at the real TikTok API keeps that setting.

The warehouse schema is migrated as the role of ``TIKTOK_PG_SERVER``, which owns it. The DAGs log
in as another role, ``TIKTOK_DAG_ROLE`` (default ``<warehouse db>_dags``), that can read and write
rows of schema ``tiktok`` and nothing else (:mod:`tiktok_ops.dag_role`); bootstrap creates it
with ``TIKTOK_DAG_ROLE_PASSWORD`` (locally: a random one kept in AIRFLOW_HOME) and the
``tiktok_warehouse`` connection logs in with it. Bootstrap keeps that connection's password in
step with the role's, and moves a ``tiktok_warehouse`` that an older bootstrap made for the owner
to the DAG role; one that points elsewhere is left alone.

This module ships and imports no tool. ``make bootstrap`` runs ``python -m tiktok_tools.bootstrap``,
which first starts the embedded PostgreSQL server of :mod:`tiktok_tools.pgserver` when there is no
``TIKTOK_PG_SERVER`` and nothing answers on 127.0.0.1:5432 (``make down`` stops it), then runs this.

Out of the box ``tiktok_default`` points at the local simulator with a random client secret and
token encryption key. A deployment (the docker-compose init service) sets them from the
environment instead: ``TIKTOK_API_URL``, ``TIKTOK_CLIENT_KEY``, ``TIKTOK_CLIENT_SECRET``,
``TIKTOK_TOKEN_ENCRYPTION_KEY``; ``TIKTOK_API_POOL_SLOTS`` sizes the pool, and
``AIRFLOW_ADMIN_PASSWORD`` sets the UI login of Airflow's simple auth manager.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from tiktok_ops import settings as local_settings

log = logging.getLogger(__name__)

API_POOL = "tiktok_api"
API_POOL_SLOTS = 4
#: The connect DAG's own pool (dags/tiktok_connect_account.py): a code must not wait behind backfills.
CONNECT_POOL = "tiktok_connect"
CONNECT_POOL_SLOTS = 4
SIM_CLIENT_KEY = "sim-client-key"


def ensure_databases(s: local_settings.Settings) -> None:
    """Create the Airflow metadata and warehouse databases if they are missing."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(f"{s.pg_server}/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in (s.airflow_db, s.warehouse_db):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    log.info("Created database %s", name)
    finally:
        conn.close()


def migrate_airflow() -> None:
    """Run ``airflow db migrate`` (a quick no-op at head)."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)


def _tiktok_connection(s: local_settings.Settings) -> dict[str, object]:
    """The TikTok app: from ``TIKTOK_*`` variables when set, else the local simulator."""
    from cryptography.fernet import Fernet

    host = os.environ.get("TIKTOK_API_URL") or s.sim_url
    simulator = host == s.sim_url
    # e.g. the simulator's container in docker-compose: plain http is allowed to these hosts only
    insecure = os.environ.get("TIKTOK_INSECURE_HTTP_HOSTS")
    return {
        "conn_type": "tiktok",
        "description": "TikTok Display API app" + (" (the local simulator)" if simulator else ""),
        "host": host,
        "login": os.environ.get("TIKTOK_CLIENT_KEY") or SIM_CLIENT_KEY,
        "password": os.environ.get("TIKTOK_CLIENT_SECRET") or secrets.token_urlsafe(24),
        "extra": json.dumps(
            {
                "token_encryption_key": os.environ.get("TIKTOK_TOKEN_ENCRYPTION_KEY") or Fernet.generate_key().decode(),
                **({"insecure_http_hosts": insecure} if insecure else {}),
            }
        ),
    }


def _warehouse_connection(s: local_settings.Settings) -> dict[str, object]:
    """The warehouse as the DAGs see it: logged in as the DAG role, never as the schema's owner."""
    from sqlalchemy.engine import make_url

    url = make_url(s.database_url(s.warehouse_db))
    return {
        "conn_type": "postgres",
        "description": f"The TikTok warehouse (schema tiktok), as {s.dag_role}: rows only, no DDL",
        "host": url.host,
        "port": url.port,
        "login": s.dag_role,
        "password": s.dag_role_password(),
        "schema": url.database,
    }


def _owner(s: local_settings.Settings) -> str | None:
    from sqlalchemy.engine import make_url

    return make_url(s.database_url(s.warehouse_db)).username


def _update_warehouse_connection(existing: Any, s: local_settings.Settings) -> str | None:
    """Bring a ``tiktok_warehouse`` that bootstrap made up to date; return what changed, if anything.

    One on this server and database that logs in as the DAG role gets the role's current password;
    one that logs in as the owner (made by an older bootstrap) moves to the DAG role. Any other
    connection was set by hand and is left alone.
    """
    wanted = _warehouse_connection(s)
    if (existing.host, existing.port, existing.schema) != (wanted["host"], wanted["port"], wanted["schema"]):
        return None
    if existing.login == wanted["login"]:
        if existing.password == wanted["password"]:
            return None
        existing.password = wanted["password"]
        return f"its password follows role {s.dag_role}'s"
    if existing.login == (owner := _owner(s)):
        existing.login, existing.password = wanted["login"], wanted["password"]
        existing.description = wanted["description"]
        return f"it logs in as {s.dag_role} now, no longer as {owner}, the schema's owner"
    return None


def ensure_connections(s: local_settings.Settings) -> None:
    """Create ``tiktok_default`` and ``tiktok_warehouse`` unless they already exist."""
    # The ORM model, not airflow.sdk.Connection: bootstrap writes Airflow's metadata DB directly.
    from airflow.models import Connection
    from airflow.utils.session import create_session
    from cryptography.fernet import InvalidToken

    wanted = {"tiktok_default": _tiktok_connection, "tiktok_warehouse": _warehouse_connection}
    with create_session() as session:
        for conn_id, build in wanted.items():
            try:
                existing = session.query(Connection).filter(Connection.conn_id == conn_id).first()  # noqa: AIR311
            except InvalidToken:
                raise SystemExit(
                    f"bootstrap: connection {conn_id} in database {s.airflow_db} was encrypted with another "
                    f"Fernet key than {s.airflow_home / 'fernet.key'} (was .airflow/ deleted, or AIRFLOW_HOME "
                    "changed?). Put the old key back, or delete the connection "
                    f"(.venv/bin/airflow connections delete {conn_id}) and run make bootstrap again; a new "
                    "tiktok_default also has a new token_encryption_key, so connect the accounts again."
                ) from None
            if existing is None:
                session.add(Connection(conn_id=conn_id, **build(s)))  # noqa: AIR311
                log.info("Created connection %s", conn_id)
            elif conn_id == "tiktok_warehouse" and (change := _update_warehouse_connection(existing, s)):
                log.info("Updated connection %s: %s", conn_id, change)
            else:
                log.info("Connection %s exists; left as it is (edit it in the UI to change it)", conn_id)


def ensure_pool() -> None:
    """Create the pools: TikTok API tasks (``TIKTOK_API_POOL_SLOTS`` slots), and connecting accounts."""
    from airflow.models import Pool
    from airflow.utils.session import create_session

    slots = int(os.environ.get("TIKTOK_API_POOL_SLOTS") or API_POOL_SLOTS)
    pools = {
        API_POOL: (slots, "Caps concurrent TikTok API tasks (rate limit: 600 requests/min/endpoint)"),
        CONNECT_POOL: (CONNECT_POOL_SLOTS, "Connecting accounts: auth codes live minutes, so never behind backfills"),
    }
    with create_session() as session:
        for name, (size, description) in pools.items():
            if session.query(Pool).filter(Pool.pool == name).first() is None:
                session.add(Pool(pool=name, slots=size, description=description, include_deferred=False))
                log.info("Created pool %s with %d slots", name, size)


def ensure_admin_login(path: Path, username: str, password: str | None = None) -> str:
    """Make ``path`` (the simple auth manager's passwords file) hold a password for ``username``.

    A given password is written if it differs; otherwise one is generated the first time and kept.
    Return the password.
    """
    passwords: dict[str, str] = {}
    if path.exists() and path.read_text().strip():
        passwords = json.loads(path.read_text())
    if password is None:
        password = passwords.get(username) or secrets.token_urlsafe(12)
    if passwords.get(username) != password:
        passwords[username] = password
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
            file.write(json.dumps(passwords) + "\n")
        log.info("Set the UI password of %s in %s", username, path)
    return password


def ensure_admin_from_env() -> None:
    """With ``AIRFLOW_ADMIN_PASSWORD`` set, write it to the simple auth manager's passwords file."""
    password = os.environ.get("AIRFLOW_ADMIN_PASSWORD")
    path = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    users = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "")
    if password and path and users:
        ensure_admin_login(Path(path), users.split(",")[0].split(":")[0].strip(), password)


def migrate_warehouse(s: local_settings.Settings) -> None:
    """Bring the warehouse schema to head as its owner (the role of ``TIKTOK_PG_SERVER``)."""
    from sqlalchemy import create_engine

    from tiktok_warehouse import migrate

    # In this process: the URL holds the owner's password, which never goes on a command line.
    engine = create_engine(s.database_url(s.warehouse_db), pool_pre_ping=True)
    try:
        migrate.upgrade(engine)
        log.info("Warehouse %s at revision %s (migrated as %s)", s.warehouse_db, migrate.current(engine), _owner(s))
    finally:
        engine.dispose()


def ensure_dag_role(s: local_settings.Settings) -> str:
    """Create or update the DAGs' login role: rows of schema ``tiktok``, nothing else; return its name.

    It may not connect to Airflow's metadata database, whose connections hold every secret.
    """
    from tiktok_ops.dag_role import create_dag_role

    if s.dag_role == _owner(s):
        raise SystemExit(
            f"bootstrap: TIKTOK_DAG_ROLE is {s.dag_role}, the role that owns the warehouse; the DAGs need a role "
            "of their own (unset TIKTOK_DAG_ROLE for the default)"
        )
    create_dag_role(s.pg_server, s.warehouse_db, s.dag_role, s.dag_role_password(), deny_databases=(s.airflow_db,))
    log.info("Role %s may read and write rows of schema tiktok in %s, and nothing else", s.dag_role, s.warehouse_db)
    return s.dag_role


def main(argv: list[str] | None = None, *, prog: str = "python -m tiktok_ops.bootstrap") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--only-warehouse", action="store_true", help="only migrate the warehouse schema")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="bootstrap: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    s = local_settings.apply(server_context=True)
    if args.only_warehouse:
        migrate_warehouse(s)
        ensure_dag_role(s)
        return
    ensure_databases(s)
    migrate_airflow()
    migrate_warehouse(s)
    ensure_dag_role(s)
    ensure_connections(s)
    ensure_pool()
    ensure_admin_from_env()
    print(
        f"bootstrap: ready (Airflow DB {s.airflow_db}, warehouse DB {s.warehouse_db} with the DAGs as role "
        f"{s.dag_role}, simulator {s.sim_url})"
    )


if __name__ == "__main__":
    main()
