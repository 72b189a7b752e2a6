"""Inputs from the UI: hostile params are refused before anything runs, and nothing reaches SQL or a
URL unchecked even when the trigger form's checks are bypassed. The DAGs write as a role that can
change rows in schema ``tiktok`` and nothing else."""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest
from airflow.sdk.exceptions import AirflowFailException
from chaos_support import SETTINGS, rows, run_inline, states, tries

pytestmark = pytest.mark.integration

INJECTION = "x'); DROP TABLE tiktok.videos; --"


def tables(engine: Any) -> set[str]:
    return {r[0] for r in rows(engine, "SELECT tablename FROM pg_tables WHERE schemaname = 'tiktok'")}


@pytest.mark.parametrize(
    ("dag_id", "conf"),
    [
        ("tiktok_profile_snapshot", {"accounts": ["two\nlines"]}),
        ("tiktok_profile_snapshot", {"accounts": ["x" * 201]}),
        ("tiktok_profile_snapshot", {"accounts": "not a list"}),
        ("tiktok_video_backfill", {"lookback_days": -1}),
        ("tiktok_video_backfill", {"lookback_days": 10**12}),
        ("tiktok_video_backfill", {"lookback_days": "7; DROP TABLE tiktok.videos"}),
        ("tiktok_video_backfill", {"mode": "full'; --"}),
        ("tiktok_cover_refresh", {"horizon_minutes": 10**9}),
        ("tiktok_connect_account", {"auth_code": "c" * 5000, "redirect_uri": "https://example.com/cb"}),
        ("tiktok_connect_account", {"refresh_token_variable": "../../etc/passwd"}),
    ],
)
def test_hostile_params_are_refused_at_trigger_time(sim, run_dag, connect, clean_warehouse, dag_id, conf) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    connect(videos=1)
    sim.admin.reset_stats()
    with pytest.raises(ParamValidationError):
        run_dag(dag_id, **conf)
    assert sim.admin.stats()["total"] == 0, "nothing was sent to TikTok"
    assert {"videos", "accounts", "sync_state"} <= tables(clean_warehouse)


def test_an_account_id_the_form_lets_through_is_refused_before_any_io(sim, run_dag, connect) -> None:
    """The form's pattern ends in "$" (its JavaScript needs that), which Python lets match before a final newline."""
    connect(videos=1)
    sim.admin.reset_stats()
    run = run_dag("tiktok_profile_snapshot", accounts=["trailing-newline\n"])
    assert states(run)[("select_accounts", -1)] == "failed"
    assert tries(run)[("select_accounts", -1)] == 1, "a bad param is not retried"
    assert sim.admin.stats()["total"] == 0


def test_an_account_name_that_is_sql_is_only_compared_never_run(sim, run_dag, connect, clean_warehouse) -> None:
    """The accounts param takes display names too, so the form lets SQL-looking text through: it matches nothing."""
    connect(videos=1)
    sim.admin.reset_stats()
    run = run_dag("tiktok_profile_snapshot", accounts=[INJECTION])
    assert states(run)[("select_accounts", -1)] == "failed"
    assert tries(run)[("select_accounts", -1)] == 1, "a bad param is not retried"
    assert sim.admin.stats()["total"] == 0
    assert {"videos", "accounts", "sync_state"} <= tables(clean_warehouse)


def test_operators_check_their_arguments_when_the_form_is_bypassed(sim, connect, clean_warehouse) -> None:
    """A DAG author (or a templated value) can hand operators anything: they fail clearly, once, before I/O."""
    from tiktok_pipeline.common import validate_open_ids

    open_id = connect(videos=3)
    sim.admin.reset_stats()
    hostile = [
        ({"operator": "video_list", "kwargs": {"open_id": INJECTION, "mode": "full"}}, "not in the warehouse"),
        ({"operator": "video_list", "kwargs": {"open_id": open_id, "mode": "full; --"}}, "mode must be"),
        (
            {"operator": "video_list", "kwargs": {"open_id": open_id, "mode": "incremental", "lookback_days": "7;"}},
            "lookback_days must be a whole number",
        ),
        (
            {"operator": "video_list", "kwargs": {"open_id": open_id, "mode": "incremental", "lookback_days": 1e9}},
            "lookback_days must be a whole number",
        ),
        (
            {"operator": "video_query", "kwargs": {"open_id": open_id, "horizon_minutes": "60 OR 1=1"}},
            "horizon_minutes must be a whole number",
        ),
        (
            {"operator": "video_query", "kwargs": {"open_id": open_id, "video_ids": ["1 OR 1=1", "../x", "١٢٣"]}},
            "video ids must be numeric strings",
        ),
        (
            {"operator": "user_info", "kwargs": {"open_id": open_id, "fields": ["open_id", "x&fields=secret"]}},
            "Unknown user field",
        ),
    ]
    for spec, says in hostile:
        with pytest.raises(AirflowFailException) as excinfo:
            run_inline(spec)
        assert says in str(excinfo.value), (spec, str(excinfo.value))
    assert sim.admin.stats()["total"] == 0, "every bad argument is refused before a request is sent"
    for value in ([INJECTION], ["acct\n"], "a,b;c", [1]):
        with pytest.raises(ValueError, match="open_id"):
            validate_open_ids(value)
    assert {"videos", "accounts", "sync_state"} <= tables(clean_warehouse)
    assert rows(clean_warehouse, "SELECT count(*) FROM tiktok.sync_state") == [(0,)]


def test_a_tampered_cursor_is_refused_not_sent(sim, connect, clean_warehouse) -> None:
    from sqlalchemy import text

    open_id = connect(videos=45)
    sim.admin.set_faults("video_list", queue=[("pass", 1), ("missing_data", 1)])
    with pytest.raises(AirflowFailException):
        run_inline({"operator": "video_list", "kwargs": {"open_id": open_id, "mode": "full"}})
    with clean_warehouse.begin() as conn:
        conn.execute(text("UPDATE tiktok.sync_state SET cursor = -5 WHERE open_id = :o"), {"o": open_id})
    sim.admin.reset_stats()
    with pytest.raises(AirflowFailException, match="cursor must be"):
        run_inline({"operator": "video_list", "kwargs": {"open_id": open_id, "mode": "full"}})
    assert sim.admin.stats()["total"] == 0


def role_connection(dag_role: dict[str, str]) -> Any:
    return psycopg2.connect(
        host="127.0.0.1",
        port=5432,
        dbname=SETTINGS.warehouse_db,
        user=dag_role["role"],
        password=dag_role["password"],
    )


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE tiktok.evil (id int)",
        "DROP TABLE tiktok.videos",
        "ALTER TABLE tiktok.videos ADD COLUMN evil int",
        "TRUNCATE tiktok.videos",
        "CREATE TABLE public.evil (id int)",
        "CREATE SCHEMA evil",
        "DROP VIEW tiktok.video_latest_stats",
        "CREATE INDEX ON tiktok.videos (title)",
        "ALTER ROLE CURRENT_USER CREATEDB",
        "CREATE ROLE evil",
    ],
)
def test_the_dag_role_cannot_change_the_schema(dag_role, statement: str) -> None:
    conn = role_connection(dag_role)
    try:
        with pytest.raises(psycopg2.Error) as excinfo, conn.cursor() as cur:
            cur.execute(statement)
        assert excinfo.value.pgcode == "42501", excinfo.value  # insufficient_privilege
    finally:
        conn.close()


def test_the_dags_run_as_the_least_privileged_role(sim, run_dag, connect, clean_warehouse, dag_role) -> None:
    import os

    from sqlalchemy.engine import make_url

    assert make_url(os.environ["AIRFLOW_CONN_TIKTOK_WAREHOUSE"]).username == dag_role["role"]
    open_id = connect(videos=25)  # the token store writes as the role too
    for dag_id, conf in (
        ("tiktok_profile_snapshot", {}),
        ("tiktok_video_backfill", {"mode": "full"}),
        ("tiktok_cover_refresh", {"horizon_minutes": 7 * 60}),
    ):
        run = run_dag(dag_id, **conf)
        assert str(run.state) == "success", states(run)
    assert rows(clean_warehouse, "SELECT count(*) FROM tiktok.videos WHERE open_id = :o", o=open_id) == [(25,)]
    conn = role_connection(dag_role)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user, has_database_privilege(current_user, current_database(), 'CREATE')")
            assert cur.fetchone() == (dag_role["role"], False)
            cur.execute("SELECT has_schema_privilege(current_user, 'tiktok', 'CREATE')")
            assert cur.fetchone() == (False,)
    finally:
        conn.close()
