"""
Migrate the warehouse schema with Alembic, configured in code (no alembic.ini).

Usage::

    python -m tiktok_warehouse.migrate [upgrade [REV] | downgrade REV | current]
                                       [--conn-id tiktok_warehouse | --url URL]

Without a command it upgrades to ``head``; at ``head`` that is a no-op. The target database is
the ``tiktok_warehouse`` Airflow connection unless ``--conn-id`` or ``--url`` says otherwise.

A migration runs in one transaction that waits at most ``[tiktok] migration_lock_timeout``
(default 15 s; ``AIRFLOW__TIKTOK__MIGRATION_LOCK_TIMEOUT``, 0 for no bound) for each lock, and has
no statement bound (rewriting a large table may take long). It gives up rather than wait longer on
purpose: a migration queued for a table's lock makes every later query on that table (each DAG
task's) queue behind it, so waiting long stalls the whole warehouse. It then raises
:class:`MigrationLockTimeout`, naming the sessions that hold the lock; nothing was changed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from tiktok_warehouse.db import (
    ALL_LOCK_MODES,
    DEFAULT_CONN_ID,
    MIGRATION_LOCK_TIMEOUT_OPTION,
    OWN_TIMEOUT_MESSAGES,
    describe_seconds,
    env_var,
    get_engine,
    lock_holders,
    setting,
    timeout_kind,
    waited_on,
)
from tiktok_warehouse.tables import SCHEMA

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from sqlalchemy.engine import Connection, Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection) -> Config:
    """Return an Alembic config that runs our migrations on ``connection``."""
    config = Config()
    # ConfigParser interpolation treats "%" specially; a checkout path may contain one.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


class MigrationLockTimeout(RuntimeError):
    """A migration waited longer than ``[tiktok] migration_lock_timeout`` for a lock; nothing was changed."""


@contextmanager
def _migration_transaction(engine: Engine, what: str, lock_timeout: float | None) -> Iterator[Connection]:
    """One transaction with the migration's bounds; a lock wait past them raises :class:`MigrationLockTimeout`."""
    pid = None
    seconds = setting(MIGRATION_LOCK_TIMEOUT_OPTION) if lock_timeout is None else lock_timeout
    ms = str(max(1, round(seconds * 1000)) if seconds > 0 else 0)
    try:
        with engine.begin() as connection:
            connection.execution_options(**{OWN_TIMEOUT_MESSAGES: True})  # not the tasks' message: ours below
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            # SET LOCAL: these end with the transaction, whatever bounds the engine's sessions have.
            for name, value in (
                ("lock_timeout", ms),
                ("statement_timeout", "0"),
                ("idle_in_transaction_session_timeout", "0"),
            ):
                connection.execute(text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value})
            yield connection
    except DBAPIError as exc:
        if timeout_kind(exc.orig) != "lock":
            raise
        relation, phrase = waited_on(exc.orig)
        holders = lock_holders(engine, relation, (pid,) if pid else (), modes=ALL_LOCK_MODES)
        who = f" Sessions holding locks on warehouse tables now: {'; '.join(holders)}." if holders else ""
        option = MIGRATION_LOCK_TIMEOUT_OPTION
        raise MigrationLockTimeout(
            f"The warehouse migration ({what}) waited longer than [tiktok] {option} ({describe_seconds(seconds)}) "
            f"for {phrase}, held by another session, and gave up.{who} Nothing was changed: the migration runs in "
            f"one transaction, which was rolled back. It does not wait longer because every query on that table "
            f"(each DAG task's) queues behind a waiting migration. Pause the tiktok DAGs or wait for those sessions "
            f"to finish (or end them), then run the migration again; or raise {option} ({env_var(option)}; 0 waits "
            f"without bound)."
        ) from None


def upgrade(engine: Engine, revision: str = "head", *, lock_timeout: float | None = None) -> None:
    """Upgrade the schema to ``revision`` in one transaction.

    :param lock_timeout: seconds to wait for each lock (0: no bound); default ``[tiktok] migration_lock_timeout``.
    :raises MigrationLockTimeout: a lock was not granted in time; nothing was changed.
    """
    with _migration_transaction(engine, f"upgrade to {revision}", lock_timeout) as connection:
        command.upgrade(alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str, *, lock_timeout: float | None = None) -> None:
    """Downgrade the schema to ``revision`` (``base`` removes every table and view) in one transaction.

    :param lock_timeout: as for :func:`upgrade`.
    """
    with _migration_transaction(engine, f"downgrade to {revision}", lock_timeout) as connection:
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
    except MigrationLockTimeout as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
