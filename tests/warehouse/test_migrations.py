"""The migration creates exactly tables.py (plus the views), is idempotent, and downgrades cleanly."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine

from tiktok_warehouse import migrate
from tiktok_warehouse.tables import SCHEMA, VIEW_NAMES, metadata

REFERENCE_SCHEMA = "tiktok_ref"
#: The newest revision (each migration adds one; the tests follow the chain instead of naming it).
HEAD = ScriptDirectory.from_config(migrate.alembic_config(None)).get_current_head()  # type: ignore[arg-type]


def schema_diffs(conn: Connection) -> list[Any]:
    """Alembic's own comparison of the live schema with tables.py."""
    context = MigrationContext.configure(
        conn,
        opts={
            "include_schemas": True,
            "include_name": lambda name, type_, parent: name == SCHEMA if type_ == "schema" else True,
            "include_object": lambda obj, name, type_, reflected, compare_to: name != "alembic_version",
            "compare_type": True,
            "compare_server_default": True,
            "version_table_schema": SCHEMA,
        },
    )
    return compare_metadata(context, metadata)


def catalog(conn: Connection, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """What alembic does not compare: partial-index predicates, CHECK constraints, identity, defaults."""

    def rows(sql: str) -> list[tuple[Any, ...]]:
        found = conn.execute(text(sql), {"schema": schema}).all()
        return sorted(tuple(str(v).replace(f"{schema}.", "<schema>.") for v in row) for row in found)

    return {
        "columns": rows(
            "SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default,"
            " is_identity, identity_generation FROM information_schema.columns"
            " WHERE table_schema = :schema AND table_name <> 'alembic_version'"
            " AND table_name NOT IN (SELECT table_name FROM information_schema.views WHERE table_schema = :schema)"
        ),
        "indexes": rows(
            "SELECT tablename, indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = :schema AND tablename <> 'alembic_version'"
            " AND tablename NOT IN (SELECT matviewname FROM pg_matviews WHERE schemaname = :schema)"
        ),
        "constraints": rows(
            "SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid) FROM pg_constraint k"
            " JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = :schema AND c.relname <> 'alembic_version'"
        ),
    }


def objects(conn: Connection) -> list[tuple[str, str]]:
    return sorted(
        conn.execute(
            text(
                "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = :schema"
            ),
            {"schema": SCHEMA},
        ).all()
    )


def test_migrated_schema_equals_tables_metadata(wh_engine: Engine) -> None:
    with wh_engine.connect() as conn:
        assert schema_diffs(conn) == []


def test_migration_matches_metadata_beyond_what_alembic_compares(scratch_db: str) -> None:
    """Build tables.py with create_all in a second schema and compare the catalogs verbatim."""
    engine = create_engine(scratch_db)
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {REFERENCE_SCHEMA}"))
            metadata.create_all(conn.execution_options(schema_translate_map={SCHEMA: REFERENCE_SCHEMA}))
        with engine.connect() as conn:
            migrated, reference = catalog(conn, SCHEMA), catalog(conn, REFERENCE_SCHEMA)
        assert migrated["indexes"], "the migrated schema has no indexes at all"
        assert migrated == reference
    finally:
        engine.dispose()


def test_views_exist(wh_engine: Engine) -> None:
    with wh_engine.connect() as conn:
        views = conn.execute(
            text("SELECT table_name FROM information_schema.views WHERE table_schema = :s"), {"s": SCHEMA}
        ).scalars()
        assert sorted(views) == sorted(VIEW_NAMES)


def test_version_table_lives_in_schema_tiktok(wh_engine: Engine) -> None:
    with wh_engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM tiktok.alembic_version")).scalar() == HEAD
        assert conn.execute(text("SELECT to_regclass('public.alembic_version')")).scalar() is None
    assert migrate.current(wh_engine) == HEAD


def test_upgrade_at_head_is_a_no_op(wh_url: str, wh_engine: Engine) -> None:
    with wh_engine.connect() as conn:
        before = conn.execute(
            text("SELECT c.oid, c.relname FROM pg_class c WHERE c.relnamespace = 'tiktok'::regnamespace")
        ).all()
    assert migrate.main(["upgrade", "--url", wh_url]) == 0
    assert migrate.main(["--url", wh_url]) == 0  # no command means upgrade
    with wh_engine.connect() as conn:
        after = conn.execute(
            text("SELECT c.oid, c.relname FROM pg_class c WHERE c.relnamespace = 'tiktok'::regnamespace")
        ).all()
    assert sorted(after) == sorted(before)  # same objects, not dropped and recreated


def test_downgrade_to_base_removes_everything_and_upgrade_works_again(scratch_db: str) -> None:
    engine = create_engine(scratch_db)
    try:
        assert migrate.main(["upgrade", "--url", scratch_db]) == 0
        with engine.connect() as conn:
            assert len(objects(conn)) > 10

        assert migrate.main(["downgrade", "base", "--url", scratch_db]) == 0
        with engine.connect() as conn:
            # Only Alembic's (now empty) version table and its primary key index remain.
            assert objects(conn) == [("alembic_version", "r"), ("alembic_version_pkc", "i")]
            assert conn.execute(text("SELECT count(*) FROM tiktok.alembic_version")).scalar() == 0
        assert migrate.current(engine) is None

        assert migrate.main(["upgrade", "head", "--url", scratch_db]) == 0
        assert migrate.current(engine) == HEAD
        with engine.connect() as conn:
            assert schema_diffs(conn) == []
    finally:
        engine.dispose()


def test_cli_finds_the_airflow_connection_in_the_environment(
    scratch_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default target is the tiktok_warehouse Airflow connection, wherever Airflow finds it."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_TIKTOK_WAREHOUSE", scratch_db.replace("postgresql+psycopg2://", "postgresql://", 1)
    )
    assert migrate.main(["upgrade"]) == 0
    assert migrate.main(["current", "--conn-id", "tiktok_warehouse"]) == 0
    printed = capsys.readouterr().out.splitlines()  # Airflow's logging may write there too
    assert f"tiktok warehouse at revision {HEAD}" in printed
    assert printed[-1] == HEAD


def test_cli_runs_as_a_module(scratch_db: str) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "tiktok_warehouse.migrate", "current", "--url", scratch_db],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "None (not migrated)"


@pytest.mark.parametrize(
    "argv",
    [["downgrade"], ["current", "0001"], ["sideways"], ["--url", "x", "--conn-id", "y"]],
)
def test_cli_rejects_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        migrate.main(argv)
    assert exited.value.code == 2
