"""The role bootstrap gives the DAGs, on the real Postgres: rows of schema tiktok, and nothing else.

Bootstrap (``make bootstrap``, docker-compose's ``airflow-init``) creates it with
``tiktok_ops.bootstrap.ensure_dag_role`` and points the ``tiktok_warehouse`` connection at it.
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from tiktok_ops import bootstrap
from tiktok_ops import settings as local_settings

pytestmark = pytest.mark.integration

INSUFFICIENT_PRIVILEGE = "42501"


@pytest.fixture(scope="module")
def dag_role(test_databases: local_settings.Settings) -> Iterator[dict[str, Any]]:
    """The role as bootstrap makes it, under a name of this module (the server's roles are shared)."""
    s = dataclasses.replace(test_databases, dag_role_name=f"{test_databases.warehouse_db}_dags_{uuid.uuid4().hex[:6]}")
    password = secrets.token_urlsafe(18)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOK_DAG_ROLE_PASSWORD", password)
        assert bootstrap.ensure_dag_role(s) == s.dag_role
    yield {"settings": s, "role": s.dag_role, "password": password}
    admin = psycopg2.connect(f"{s.pg_server}/{s.warehouse_db}")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP OWNED BY "{s.dag_role}"; DROP ROLE "{s.dag_role}"')
    admin.close()


def connect_as(role: dict[str, Any], database: str) -> Any:
    server = make_url(role["settings"].pg_server)
    return psycopg2.connect(
        host=server.host,
        port=server.port or 5432,
        dbname=database,
        user=role["role"],
        password=role["password"],
    )


def assert_refused(role: dict[str, Any], statement: str) -> None:
    """``statement``, run as the DAG role in the warehouse, fails for want of privilege."""
    conn = connect_as(role, role["settings"].warehouse_db)
    conn.autocommit = True  # CREATE DATABASE runs outside a transaction
    try:
        with pytest.raises(psycopg2.Error) as excinfo, conn.cursor() as cur:
            cur.execute(statement)
        assert excinfo.value.pgcode == INSUFFICIENT_PRIVILEGE, excinfo.value
    finally:
        conn.close()


def test_the_dag_role_reads_and_writes_rows_of_every_warehouse_table(dag_role, clean_warehouse) -> None:
    conn = connect_as(dag_role, dag_role["settings"].warehouse_db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == (dag_role["role"],)
            cur.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'tiktok' AND c.relkind = 'r'"
            )
            # alembic's version table excepted: it may only read that (test_dag_role_version_table.py)
            tables = [name for (name,) in cur.fetchall() if name != "alembic_version"]
            assert "accounts" in tables and "videos" in tables
            for table in tables:
                for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                    cur.execute("SELECT has_table_privilege(current_user, %s, %s)", (f"tiktok.{table}", privilege))
                    assert cur.fetchone() == (True,), f"{privilege} on tiktok.{table}"
            # And for real: a row in, changed, read back, deleted.
            cur.execute(
                "INSERT INTO tiktok.accounts (open_id, display_name, connected_at, updated_at, access_token_enc,"
                " refresh_token_enc, access_expires_at, refresh_expires_at)"
                " VALUES ('role-test', '<script>x</script>', now(), now(), '\\x00', '\\x00', now(), now())"
            )
            cur.execute("UPDATE tiktok.accounts SET status = 'disabled' WHERE open_id = 'role-test'")
            cur.execute("SELECT display_name, status FROM tiktok.accounts WHERE open_id = 'role-test'")
            assert cur.fetchone() == ("<script>x</script>", "disabled")
            cur.execute("DELETE FROM tiktok.accounts WHERE open_id = 'role-test'")
            assert cur.rowcount == 1
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE tiktok.evil (id int)",
        "CREATE TABLE public.evil (id int)",
        "CREATE SCHEMA evil",
        "DROP TABLE tiktok.videos",
        "DROP VIEW tiktok.video_latest_stats",
        "ALTER TABLE tiktok.videos ADD COLUMN evil int",
        "ALTER TABLE tiktok.accounts DROP COLUMN access_token_enc",
        "TRUNCATE tiktok.videos",
        "CREATE INDEX ON tiktok.videos (title)",
        "ALTER ROLE CURRENT_USER CREATEDB",
        "CREATE ROLE evil",
        "CREATE DATABASE evil",
    ],
)
def test_the_dag_role_cannot_create_drop_or_alter(dag_role, statement: str) -> None:
    assert_refused(dag_role, statement)


def test_the_dag_role_cannot_reach_the_airflow_metadata_database(dag_role) -> None:
    s = dag_role["settings"]
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        connect_as(dag_role, s.airflow_db)
    # Nor read it from the warehouse's server some other way: there is no cross-database query in Postgres,
    # and the role cannot make one (no dblink or postgres_fdw: it cannot CREATE EXTENSION).
    conn = connect_as(dag_role, s.warehouse_db)
    try:
        with pytest.raises(psycopg2.Error) as excinfo, conn.cursor() as cur:
            cur.execute("CREATE EXTENSION dblink")
        assert excinfo.value.pgcode == INSUFFICIENT_PRIVILEGE, excinfo.value
    finally:
        conn.close()


def test_the_dag_role_is_no_superuser_and_can_grant_itself_nothing(dag_role) -> None:
    conn = connect_as(dag_role, dag_role["settings"].warehouse_db)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolinherit"
                " FROM pg_roles WHERE rolname = current_user"
            )
            assert cur.fetchone() == (False, False, False, False, False, False)
            cur.execute(
                "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member"
                " WHERE r.rolname = current_user"
            )
            assert cur.fetchone() == (0,), "member of no other role"
            # Postgres only warns here ("no privileges were granted"): check that nothing was.
            cur.execute("GRANT SELECT ON tiktok.accounts TO PUBLIC")
            cur.execute(
                "SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a"
                " WHERE c.oid = 'tiktok.accounts'::regclass AND a.grantee = 0"
            )
            assert cur.fetchone() == (0,), "PUBLIC was granted something on tiktok.accounts"
    finally:
        conn.close()


def test_the_connection_bootstrap_writes_logs_in_as_the_dag_role(dag_role) -> None:
    s = dag_role["settings"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOK_DAG_ROLE_PASSWORD", dag_role["password"])
        conn = bootstrap._warehouse_connection(s)
    owner = make_url(s.pg_server).username
    assert conn["login"] == dag_role["role"] != owner
    assert conn["password"] == dag_role["password"]
    assert conn["schema"] == s.warehouse_db


def test_only_the_dag_role_not_every_role_may_refresh_the_marts(dag_role, test_databases) -> None:
    """``tiktok.refresh_marts()`` runs as the owner (SECURITY DEFINER): it is granted to the DAGs' role,
    not to PUBLIC, so an analyst's read-only role cannot start the heavy refreshes whenever it likes."""
    conn = connect_as(dag_role, dag_role["settings"].warehouse_db)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tiktok.refresh_marts()")
    finally:
        conn.close()
    reader = f"{test_databases.warehouse_db}_reader_{uuid.uuid4().hex[:6]}"
    admin = psycopg2.connect(f"{test_databases.pg_server}/{test_databases.warehouse_db}")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE ROLE "{reader}" NOLOGIN')
            cur.execute(f'GRANT USAGE ON SCHEMA tiktok TO "{reader}"')
            cur.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA tiktok TO "{reader}"')
            cur.execute(f'SET ROLE "{reader}"')
            with pytest.raises(psycopg2.Error) as excinfo:
                cur.execute("SELECT tiktok.refresh_marts()")
            assert excinfo.value.pgcode == INSUFFICIENT_PRIVILEGE, excinfo.value
            cur.execute("RESET ROLE")
    finally:
        with admin.cursor() as cur:
            cur.execute("RESET ROLE")
            cur.execute(f'DROP OWNED BY "{reader}"; DROP ROLE "{reader}"')
        admin.close()
