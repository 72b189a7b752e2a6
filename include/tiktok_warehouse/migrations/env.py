"""Alembic environment for the warehouse; configured by ``tiktok_warehouse.migrate``, not an alembic.ini.

The caller hands over an open SQLAlchemy connection in ``config.attributes["connection"]`` so
credentials never pass through Alembic's config file interpolation.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from tiktok_warehouse.tables import SCHEMA, metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Compare only our own schema, never Airflow's or anyone else's tables."""
    if type_ == "schema":
        return name == SCHEMA
    return True


def run_migrations_online() -> None:
    """Run the migrations on the connection the caller opened."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "tiktok_warehouse migrations need a connection: run them with "
            "`python -m tiktok_warehouse.migrate`, which opens one from the Airflow connection."
        )
    # The version table lives in our schema, and Alembic creates it before the first migration runs.
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=SCHEMA,
        include_schemas=True,
        include_name=include_name,
        compare_type=True,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("tiktok_warehouse migrations run online only: use `python -m tiktok_warehouse.migrate`.")
run_migrations_online()
