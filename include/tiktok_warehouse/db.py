"""Engines for the warehouse database, built from an Airflow Postgres connection."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

DEFAULT_CONN_ID = "tiktok_warehouse"

ENGINE_KWARGS = {
    # A task may start long after the pool last used a connection (or Postgres restarted).
    "pool_pre_ping": True,
    # Drop connections before server-side idle timeouts or load balancers cut them.
    "pool_recycle": 1800,
    "pool_size": 5,
    "max_overflow": 5,
    # Shows up in pg_stat_activity, so a DBA can tell our sessions from Airflow's own.
    "connect_args": {"application_name": "tiktok_warehouse"},
}


def get_engine(conn_id: str = DEFAULT_CONN_ID) -> Engine:
    """
    Return an engine for the warehouse described by the Airflow connection ``conn_id``.

    The connection is looked up wherever Airflow looks (secrets backends, ``AIRFLOW_CONN_*``
    environment variables, the metadata database), e.g.
    ``AIRFLOW_CONN_TIKTOK_WAREHOUSE=postgresql://user:pass@host:5432/tiktok``.
    """
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id=conn_id)
    return hook.get_sqlalchemy_engine(engine_kwargs=dict(ENGINE_KWARGS))
