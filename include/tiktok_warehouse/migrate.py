"""
Migrate the warehouse schema with Alembic, configured in code (no alembic.ini).

Usage::

    python -m tiktok_warehouse.migrate [upgrade [REV] | downgrade REV | current]
                                       [--conn-id tiktok_warehouse | --url URL]

Without a command it upgrades to ``head``; at ``head`` that is a no-op. The target database is
the ``tiktok_warehouse`` Airflow connection unless ``--conn-id`` or ``--url`` says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from tiktok_warehouse.db import DEFAULT_CONN_ID, get_engine
from tiktok_warehouse.tables import SCHEMA

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Connection, Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection) -> Config:
    """Return an Alembic config that runs our migrations on ``connection``."""
    config = Config()
    # ConfigParser interpolation treats "%" specially; a checkout path may contain one.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to ``revision`` in one transaction."""
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade the schema to ``revision`` (``base`` removes every table and view) in one transaction."""
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), revision)


def current(engine: Engine) -> str | None:
    """Return the revision the database is at, or None if it was never migrated."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table_schema": SCHEMA})
        return context.get_current_revision()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tiktok_warehouse.migrate",
        description="Migrate the TikTok warehouse schema (Alembic).",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="upgrade",
        choices=("upgrade", "downgrade", "current"),
        help="upgrade (default), downgrade or current",
    )
    parser.add_argument("revision", nargs="?", help="target revision (upgrade: default head)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--conn-id",
        default=DEFAULT_CONN_ID,
        help=f"Airflow Postgres connection id (default {DEFAULT_CONN_ID})",
    )
    target.add_argument("--url", help="SQLAlchemy URL, e.g. postgresql+psycopg2://user@host:5432/db")
    args = parser.parse_intermixed_args(argv)
    if args.command == "downgrade" and not args.revision:
        parser.error("downgrade needs a revision, e.g. `downgrade base`")
    if args.command == "current" and args.revision:
        parser.error("current takes no revision")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    engine = create_engine(args.url, pool_pre_ping=True) if args.url else get_engine(args.conn_id)
    try:
        if args.command == "upgrade":
            upgrade(engine, args.revision or "head")
            print(f"tiktok warehouse at revision {current(engine)}")
        elif args.command == "downgrade":
            downgrade(engine, args.revision)
            print(f"tiktok warehouse at revision {current(engine)}")
        else:
            print(current(engine) or "None (not migrated)")
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
