"""get_engine builds a sensible engine from the Airflow connection, wherever Airflow finds it."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tiktok_warehouse.db import get_engine

pytestmark = pytest.mark.integration


def test_get_engine_uses_the_airflow_connection(wh_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    database = wh_url.rsplit("/", 1)[1]
    monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_WAREHOUSE", wh_url.replace("postgresql+psycopg2://", "postgresql://", 1))
    engine = get_engine()
    try:
        assert engine.pool._pre_ping is True  # type: ignore[attr-defined]
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == database
            assert conn.execute(text("SHOW application_name")).scalar() == "tiktok_warehouse"
            assert conn.execute(text("SELECT count(*) FROM tiktok.accounts")).scalar() >= 0
    finally:
        engine.dispose()


def test_get_engine_takes_another_conn_id(wh_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_REPLICA", wh_url.replace("postgresql+psycopg2://", "postgresql://", 1))
    engine = get_engine("warehouse_replica")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
