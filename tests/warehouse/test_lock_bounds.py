"""A warehouse write blocked by another session's lock ends at the bound, with an error that says what to do.

Real Postgres: one session (an "admin's psql") holds a lock and keeps its transaction open; an engine
from ``get_engine`` writes. Each write runs in a thread joined with a generous limit, so a write that
hangs (the bug) fails the test instead of hanging the suite.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from tiktok_pipeline.removals import POLICY
from tiktok_warehouse.db import (
    WarehouseLockTimeout,
    WarehouseStatementTimeout,
    get_engine,
)
from tiktok_warehouse.loads import Warehouse
from tiktok_warehouse.tokens import TokenStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # the clock of the make_video fixture (conftest.T0)
#: Far above the 1 s bound the tests set: only a write that ignores it takes this long.
HANG = 30.0
ADMIN = "admin psql"


def conn_json(wh_url: str, *, driver: str = "postgresql+psycopg2", options: str | None = None) -> str:
    import json

    url = make_url(wh_url)
    extra: dict[str, Any] = {"sqlalchemy_scheme": driver}
    if options:
        extra["sqlalchemy_query"] = {"options": options}
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": url.host,
            "port": url.port,
            "login": url.username,
            "password": url.password,
            "schema": url.database,
            "extra": extra,
        }
    )


@pytest.fixture
def bounded(wh_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Engine]]:
    """``bounded(lock=1, statement=0, driver=...)``: a ``get_engine`` engine with those ``[tiktok]`` bounds."""
    engines: list[Engine] = []

    def make(*, lock: str = "1", statement: str = "off", driver: str = "postgresql+psycopg2", **kw: Any) -> Engine:
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_WAREHOUSE", conn_json(wh_url, driver=driver, **kw))
        monkeypatch.setenv("AIRFLOW__TIKTOK__WAREHOUSE_LOCK_TIMEOUT", lock)
        monkeypatch.setenv("AIRFLOW__TIKTOK__WAREHOUSE_STATEMENT_TIMEOUT", statement)
        engines.append(get_engine())
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()


@contextmanager
def admin_session(wh_url: str, *statements: str) -> Iterator[Any]:
    """Another session that ran ``statements`` and keeps its transaction (and locks) open until the block ends."""
    conn = psycopg2.connect(
        make_url(wh_url).set(drivername="postgresql").render_as_string(hide_password=False),
        application_name=ADMIN,
    )
    try:
        with conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        yield conn
    finally:
        conn.rollback()
        conn.close()


def in_thread(work: Callable[[], Any], *, release: Callable[[], None]) -> tuple[Any, BaseException | None, float]:
    """Run ``work``; return (result, error, seconds). A hang releases the lock and fails the test."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:
            box["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    if thread.is_alive():
        release()
        thread.join(HANG)
        pytest.fail(f"the write was still waiting for the lock after {HANG:.0f}s: no bound")
    return box.get("result"), box.get("error"), time.monotonic() - started


def test_warehouse_sessions_carry_the_bounds_and_keep_the_connections_own_options(
    bounded: Callable[..., Engine],
) -> None:
    engine = bounded(lock="2.5", statement="600", options="-c search_path=tiktok,public")
    with engine.connect() as conn:
        assert conn.execute(text("SHOW lock_timeout")).scalar() == "2500ms"
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "10min"
        assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "10min"
        assert conn.execute(text("SHOW search_path")).scalar() == "tiktok,public"
        assert conn.execute(text("SHOW application_name")).scalar() == "tiktok_warehouse"


@pytest.mark.parametrize("driver", ["postgresql+psycopg2", "postgresql+psycopg"])
def test_a_write_blocked_by_a_row_lock_fails_at_the_bound_naming_the_row_and_its_holder(
    wh_url: str,
    bounded: Callable[..., Engine],
    account: str,
    make_video: Callable[..., dict[str, Any]],
    driver: str,
) -> None:
    warehouse = Warehouse(bounded(lock="1", driver=driver), removals=POLICY)
    first = make_video(1)
    warehouse.upsert_videos(account, [first], captured_at=T0)
    changed = [make_video(1, view_count=5000), make_video(2)]

    with admin_session(wh_url, f"UPDATE tiktok.videos SET title = title WHERE id = '{first['id']}'") as admin:
        _, error, seconds = in_thread(
            lambda: warehouse.upsert_videos(account, changed, captured_at=T0 + timedelta(hours=1)),
            release=admin.rollback,
        )
        assert isinstance(error, WarehouseLockTimeout), error
        assert 0.9 <= seconds < HANG
        message = str(error)
        assert "[tiktok] warehouse_lock_timeout (1s)" in message
        assert "a row lock on videos (tuple " in message
        assert f"application '{ADMIN}'" in message and "idle in transaction" in message
        assert (
            "Nothing of that transaction was stored" in message and "AIRFLOW__TIKTOK__WAREHOUSE_LOCK_TIMEOUT" in message
        )
        assert "INSERT" not in message and "5000" not in message  # no SQL, no parameters
        # Nothing of the write is stored: the first video as before, the second not at all.
        with warehouse.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, view_count FROM tiktok.videos WHERE open_id = :o ORDER BY id"), {"o": account}
            ).all()
        assert rows == [(first["id"], first["view_count"])]

    # The lock is gone: the same write (a retry) goes through on the same engine.
    warehouse.upsert_videos(account, changed, captured_at=T0 + timedelta(hours=1))
    with warehouse.engine.connect() as conn:
        views = dict(
            conn.execute(text("SELECT id, view_count FROM tiktok.videos WHERE open_id = :o"), {"o": account}).all()
        )
    assert views == {first["id"]: 5000, changed[1]["id"]: changed[1]["view_count"]}


def test_a_write_blocked_by_a_table_lock_names_the_session_holding_it(
    wh_url: str, bounded: Callable[..., Engine], account: str
) -> None:
    store = TokenStore(bounded(lock="1"), None)
    with admin_session(wh_url, "LOCK TABLE tiktok.accounts IN ACCESS EXCLUSIVE MODE") as admin:
        _, error, seconds = in_thread(lambda: store.set_status(account, "disabled", "test"), release=admin.rollback)
    assert isinstance(error, WarehouseLockTimeout), error
    assert 0.9 <= seconds < HANG
    assert "for a table lock (Postgres does not say which table)" in str(error)
    assert f"application '{ADMIN}'" in str(error) and "holds accounts AccessExclusiveLock" in str(error)
    assert [a.status for a in store.list_accounts(open_ids=[account], statuses=("active", "disabled"))] == ["active"]


def test_a_statement_past_the_statement_bound_is_cancelled_with_its_setting_named(
    bounded: Callable[..., Engine],
) -> None:
    engine = bounded(statement="0.5")

    def slow() -> None:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_sleep(20)"))

    _, error, seconds = in_thread(slow, release=lambda: None)
    assert isinstance(error, WarehouseStatementTimeout), error
    assert seconds < 20
    assert "[tiktok] warehouse_statement_timeout (0.5s)" in str(error)
