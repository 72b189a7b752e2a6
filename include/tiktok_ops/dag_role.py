"""Create the least-privilege Postgres role the DAGs should log in as: DML on schema ``tiktok`` only.

(Except ``tiktok.alembic_version``, which it may only read.) What it keeps through PUBLIC and
being a login role: CONNECT to databases not denied with ``--deny-database``, temporary tables,
advisory locks, and ``ALTER ROLE CURRENT_USER SET`` of its own session defaults.

The DAGs read and write rows; they never need to create, alter or drop anything. Migrations run
as the role that owns the schema (``make migrate``), the DAGs as this one. ``make bootstrap`` (and
docker-compose's ``airflow-init``) creates it and points the ``tiktok_warehouse`` connection at it;
to do it by hand::

    python -m tiktok_ops.dag_role --database tiktok --role tiktok_dags   # password from $TIKTOK_DAG_ROLE_PASSWORD
    python -m tiktok_ops.dag_role --database tiktok --role tiktok_dags --print   # just show the SQL

then point the ``tiktok_warehouse`` connection at it
(``postgresql://tiktok_dags:<password>@host:5432/tiktok``). Run it again after a migration that
adds tables only if those tables were created by another role than the one running this script
(default privileges cover tables its own role creates later).
"""

from __future__ import annotations

import argparse
import os
import sys

#: The grants, in order. ``{db}`` and ``{role}`` are quoted identifiers.
STATEMENTS: tuple[str, ...] = (
    # PUBLIC keeps its default CONNECT and TEMPORARY on the database (analysts' roles may rely on
    # them); revoke TEMPORARY from PUBLIC yourself if nobody needs temporary tables.
    "REVOKE ALL ON DATABASE {db} FROM {role}",
    "REVOKE ALL ON SCHEMA public FROM {role}",
    # PostgreSQL 15's default on older servers too: nobody but the owner creates objects in public.
    "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    "GRANT CONNECT ON DATABASE {db} TO {role}",
    "GRANT USAGE ON SCHEMA tiktok TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA tiktok TO {role}",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA tiktok TO {role}",
    # Tables and sequences a later migration creates (as the role running this) are covered too.
    "ALTER DEFAULT PRIVILEGES IN SCHEMA tiktok GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA tiktok GRANT USAGE, SELECT ON SEQUENCES TO {role}",
)
#: Alembic's bookkeeping lives in schema tiktok too, so the grants above cover it: take back all but
#: SELECT, or a DAG (or whoever holds its password) could rewrite the recorded revision and make the
#: next ``make migrate`` skip or replay migrations. Run once the table exists (bootstrap migrates
#: first); alembic creates it only once, at the first migration, so the default privileges above
#: never grant it again -- unless this ran before the first migration: then run it again after.
VERSION_TABLE = "tiktok.alembic_version"
VERSION_TABLE_STATEMENTS: tuple[str, ...] = (
    "REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLE tiktok.alembic_version FROM {role}",
)
#: The marts' refresh runs as their owner (SECURITY DEFINER); migration 0011 takes EXECUTE from
#: PUBLIC, so the DAGs' role is granted it by name. Run once the function exists (after migrating).
REFRESH_FUNCTION = "tiktok.refresh_marts()"
FUNCTION_STATEMENTS: tuple[str, ...] = ("GRANT EXECUTE ON FUNCTION tiktok.refresh_marts() TO {role}",)
#: For each database the role must stay out of (Airflow's metadata): ``{db}`` is that database.
DENY_STATEMENTS: tuple[str, ...] = (
    "REVOKE ALL ON DATABASE {db} FROM {role}",
    # Every role may connect to every database through PUBLIC; only the owner needs this one.
    "REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC",
)
ROLE_OPTIONS = "LOGIN PASSWORD %s NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS"


def create_dag_role(
    server: str, database: str, role: str, password: str, *, deny_databases: tuple[str, ...] = ()
) -> None:
    """Create (or reset) ``role`` with ``password`` and exactly the grants above, in ``database``.

    :param server: ``postgresql://user@host:port`` of a role that owns the schema (or a superuser).
    :param deny_databases: databases nobody but their owner may connect to, e.g. Airflow's metadata
        database (its connections hold every secret); ``database`` itself is never denied.
    """
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(f"{server.rstrip('/')}/{database}")
    conn.autocommit = True
    ident = sql.Identifier(role)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(sql.SQL(f"{verb} ROLE {{}} {ROLE_OPTIONS}").format(ident), (password,))
            for statement in STATEMENTS:
                cur.execute(sql.SQL(statement).format(db=sql.Identifier(database), role=ident))
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,))
            if cur.fetchone()[0]:
                for statement in VERSION_TABLE_STATEMENTS:
                    cur.execute(sql.SQL(statement).format(role=ident))
            else:
                print(
                    f"{VERSION_TABLE} does not exist yet: run this again after the first migration, so that "
                    f"{role} cannot write it.",
                    file=sys.stderr,
                )
            cur.execute("SELECT to_regprocedure(%s) IS NOT NULL", (REFRESH_FUNCTION,))
            if cur.fetchone()[0]:
                for statement in FUNCTION_STATEMENTS:
                    cur.execute(sql.SQL(statement).format(role=ident))
            for other in deny_databases:
                if other != database:
                    for statement in DENY_STATEMENTS:
                        cur.execute(sql.SQL(statement).format(db=sql.Identifier(other), role=ident))
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default=os.environ.get("TIKTOK_WAREHOUSE_DB", "tiktok"))
    parser.add_argument("--role", default="tiktok_dags")
    parser.add_argument(
        "--server",
        default=os.environ.get("TIKTOK_PG_SERVER", "postgresql://postgres@127.0.0.1:5432"),
        help="a role that owns schema tiktok (default $TIKTOK_PG_SERVER)",
    )
    parser.add_argument(
        "--deny-database",
        action="append",
        default=[],
        metavar="NAME",
        help="a database only its owner may connect to, e.g. Airflow's metadata database (repeatable)",
    )
    parser.add_argument("--print", action="store_true", help="print the SQL instead of running it")
    args = parser.parse_args(argv)
    if args.print:
        print(f'CREATE ROLE "{args.role}" {ROLE_OPTIONS % "<password>"};')
        for statement in (*STATEMENTS, *VERSION_TABLE_STATEMENTS, *FUNCTION_STATEMENTS):
            print(statement.format(db=f'"{args.database}"', role=f'"{args.role}"') + ";")
        for other in args.deny_database:
            for statement in DENY_STATEMENTS:
                print(statement.format(db=f'"{other}"', role=f'"{args.role}"') + ";")
        return 0
    password = os.environ.get("TIKTOK_DAG_ROLE_PASSWORD")
    if not password:
        print("Set TIKTOK_DAG_ROLE_PASSWORD to the role's password (it is never taken on the command line).")
        return 2
    create_dag_role(args.server, args.database, args.role, password, deny_databases=tuple(args.deny_database))
    print(f"Role {args.role} can now read and write rows of schema tiktok in {args.database}, and nothing else.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
