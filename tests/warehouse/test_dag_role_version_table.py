"""The DAG role may read alembic's version table in schema tiktok, never write it (audit 2, item 9).

The table records which migrations ran: a role that can rewrite it makes the next ``make migrate``
skip or replay migrations. The grants on schema tiktok (and their default privileges) cover it, so
the role script takes writing back.
"""

from __future__ import annotations

import pytest
from test_dag_role import assert_refused, connect_as
from test_dag_role import dag_role as dag_role  # the fixture

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE tiktok.alembic_version SET version_num = 'base'",
        "DELETE FROM tiktok.alembic_version",
        "INSERT INTO tiktok.alembic_version VALUES ('9999')",
        "TRUNCATE tiktok.alembic_version",
    ],
)
def test_the_dag_role_cannot_write_the_migration_version(dag_role, statement: str) -> None:
    assert_refused(dag_role, statement)


def test_the_dag_role_may_still_read_it_and_write_every_other_table(dag_role) -> None:
    conn = connect_as(dag_role, dag_role["settings"].warehouse_db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM tiktok.alembic_version")
            assert cur.fetchone() == (1,)
            cur.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'tiktok' AND c.relkind IN ('r', 'p') AND c.relname <> 'alembic_version' "
                "AND NOT has_table_privilege(current_user, c.oid, 'INSERT, UPDATE, DELETE')"
            )
            assert cur.fetchall() == [], "every other table keeps its DML"
            cur.execute(
                "SELECT has_table_privilege(current_user, 'tiktok.alembic_version', 'UPDATE'), "
                "has_table_privilege(current_user, 'tiktok.alembic_version', 'SELECT')"
            )
            assert cur.fetchone() == (False, True)
    finally:
        conn.close()
