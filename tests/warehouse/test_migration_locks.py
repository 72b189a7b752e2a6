"""A migration that cannot get its lock gives up at ``[tiktok] migration_lock_timeout``, changes nothing, says who.

Real Postgres: a scratch warehouse at 0011; another session reads ``tiktok.profile_snapshots`` in an
open transaction, so 0012's ``ALTER TABLE`` waits. Run in a thread joined with a generous limit, so a
migration that waits for ever (the old behaviour) fails the test rather than hanging the suite.
"""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.warehouse.test_lock_bounds import in_thread
from tiktok_warehouse import migrate

pytestmark = pytest.mark.integration

HANG = 30.0


def _columns(engine: Any) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = 'tiktok' AND table_name = 'profile_snapshots'"
                )
            ).scalars()
        )


def test_a_migration_blocked_by_a_lock_gives_up_changes_nothing_and_runs_once_it_is_free(
    scratch_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = create_engine(scratch_db)
    migrate.upgrade(engine, "0011")
    reader = psycopg2.connect(
        make_url(scratch_db).set(drivername="postgresql").render_as_string(hide_password=False),
        application_name="analyst notebook",
    )
    try:
        with reader.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM tiktok.profile_snapshots")  # AccessShare until the transaction ends

        _, error, seconds = in_thread(lambda: migrate.upgrade(engine, "head", lock_timeout=1), release=reader.rollback)
        assert isinstance(error, migrate.MigrationLockTimeout), error
        assert 0.9 <= seconds < HANG
        message = str(error)
        assert "(upgrade to head) waited longer than [tiktok] migration_lock_timeout (1s)" in message
        assert "application 'analyst notebook'" in message and "profile_snapshots AccessShareLock" in message
        assert "Nothing was changed" in message and "AIRFLOW__TIKTOK__MIGRATION_LOCK_TIMEOUT" in message
        assert migrate.current(engine) == "0011" and "checked_at" not in _columns(engine)

        # The command line: the configured bound, a clear message, a non-zero exit, no traceback.
        monkeypatch.setenv("AIRFLOW__TIKTOK__MIGRATION_LOCK_TIMEOUT", "1")
        code: list[int] = []
        upgrade = lambda: code.append(migrate.main(["upgrade", "--url", scratch_db]))  # noqa: E731
        _, error, _ = in_thread(upgrade, release=reader.rollback)
        assert error is None and code == [3]
        assert "error: The warehouse migration (upgrade to head) waited longer" in capsys.readouterr().err
    finally:
        reader.rollback()
        reader.close()

    migrate.upgrade(engine, "head")  # the session is gone: it goes through
    assert migrate.current(engine) != "0011" and "checked_at" in _columns(engine)
    engine.dispose()
