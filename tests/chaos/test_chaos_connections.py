"""The TikTok connection's settings, end to end: which warehouse every task uses, and a bad key.

The loads find the warehouse through the ``warehouse_conn_id`` extra of the TikTok connection, so
the account selection and the data-quality checks must too: a check that read another database
would pass (or fail) on rows no run wrote. A missing or malformed token encryption key is a
configuration error that no retry fixes: the run fails at once, in one task, saying what to fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from chaos_support import SETTINGS, rows, states, tries
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.integration

BAD_SNAPSHOT = """
INSERT INTO tiktok.accounts (open_id, display_name, status, scopes, access_token_enc, refresh_token_enc,
    access_expires_at, refresh_expires_at, connected_at, updated_at)
VALUES (:o, 'planted', 'disabled', ARRAY['user.info.basic'], '\\x00', '\\x00', now(), now(), now(), now());
INSERT INTO tiktok.profile_snapshots (open_id, snapshot_date, captured_at, follower_count)
VALUES (:o, (now() AT TIME ZONE 'UTC')::date, now(), -1);
"""


@contextmanager
def second_warehouse() -> Iterator[str]:
    """A migrated warehouse database of its own; yield its Airflow connection URI."""
    import psycopg2

    name = f"{SETTINGS.warehouse_db}_b_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(f"{SETTINGS.pg_server}/postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
        uri = SETTINGS.database_url(name, driver="postgresql")
        migrate = [sys.executable, "-m", "tiktok_warehouse.migrate", "upgrade", "--url", SETTINGS.database_url(name)]
        subprocess.run(migrate, check=True, capture_output=True, timeout=120)
        yield uri
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def plant_a_bad_snapshot(engine) -> None:
    """A row that breaks check_profile_snapshots (a negative follower count), in ``engine``'s warehouse."""
    planted = {"o": f"planted-{uuid.uuid4().hex[:8]}"}
    with engine.begin() as conn:
        for statement in filter(str.strip, BAD_SNAPSHOT.split(";")):
            conn.execute(text(statement), planted)


def rendered_conn_id(run, task_id: str) -> str:
    from airflow.utils.session import create_session

    with create_session() as session:
        [(fields,)] = session.execute(
            text(
                "SELECT rendered_fields FROM rendered_task_instance_fields"
                " WHERE dag_id = :d AND run_id = :r AND task_id = :t"
            ),
            {"d": run.dag_id, "r": run.run_id, "t": task_id},
        ).all()
    return fields["conn_id"]


def test_selection_loads_and_checks_all_use_the_warehouse_the_tiktok_connection_names(
    sim, run_dag, tiktok_extra, clean_warehouse, monkeypatch
) -> None:
    from tiktok_sim.testing import DEFAULT_REDIRECT_URI

    plant_a_bad_snapshot(clean_warehouse)  # the default warehouse is broken: a check reading it fails
    with second_warehouse() as uri:
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_WAREHOUSE_B", uri)
        tiktok_extra(warehouse_conn_id="tiktok_warehouse_b")
        engine_b = create_engine(uri)
        try:
            open_id = sim.admin.create_account(videos=3)["open_id"]
            code = sim.admin.mint_code(open_id)
            connected = run_dag("tiktok_connect_account", auth_code=code, redirect_uri=DEFAULT_REDIRECT_URI)
            assert str(connected.state) == "success", states(connected)

            run = run_dag("tiktok_profile_snapshot")
            assert str(run.state) == "success", states(run)
            assert states(run)[("snapshot_profile", 0)] == "success", "selection found the account in warehouse B"
            assert rows(engine_b, "SELECT open_id FROM tiktok.profile_snapshots") == [(open_id,)]
            assert rows(
                clean_warehouse, "SELECT count(*) FROM tiktok.profile_snapshots WHERE open_id = :o", o=open_id
            ) == [(0,)]
            assert rendered_conn_id(run, "check_profile_snapshots") == "tiktok_warehouse_b"

            plant_a_bad_snapshot(engine_b)  # now warehouse B breaks the invariant: its check must see it
            run = run_dag("tiktok_profile_snapshot")
            assert states(run)[("check_profile_snapshots", -1)] == "failed"
            assert states(run)[("snapshot_profile", 0)] == "success"
        finally:
            engine_b.dispose()


@pytest.mark.parametrize(("key", "problem"), [("not-a-fernet-key", "is not a valid Fernet key"), ("", "is missing")])
def test_a_bad_token_encryption_key_fails_selection_at_once_saying_what_to_fix(
    sim, run_dag, connect, tiktok_extra, capfd, key: str, problem: str
) -> None:
    connect(videos=2)
    tiktok_extra(token_encryption_key=key)
    assert json.loads(os.environ["AIRFLOW_CONN_TIKTOK_DEFAULT"])["extra"]["token_encryption_key"] == key
    sim.admin.reset_stats()
    run = run_dag("tiktok_profile_snapshot")
    task_states = states(run)
    assert str(run.state) == "failed"
    assert task_states[("select_accounts", -1)] == "failed"
    assert tries(run)[("select_accounts", -1)] == 1, "a configuration error is not retried"
    assert task_states[("snapshot_profile", -1)] == "upstream_failed", "no account task ran"
    assert task_states[("check_profile_snapshots", -1)] == "success", "the checks run whatever happened"
    out, err = capfd.readouterr()
    assert f'The "token_encryption_key" extra of the Airflow connection "tiktok_default" {problem}' in out + err
    assert "then clear this task" in out + err
    assert sim.admin.stats()["total"] == 0, "nothing was asked of TikTok"
