"""Who holds the lock: the description names another session as data, on one line.

Real Postgres: a role whose name holds a line break (Postgres allows any character in a quoted
identifier) holds a table lock; a bounded warehouse write times out and names it. The role name
goes into the task log and the failure alert verbatim: a line break there forges a "Next step:"
line under our own message.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from test_lock_bounds import HANG, conn_json, in_thread

from tiktok_warehouse.db import WarehouseLockTimeout, get_engine
from tiktok_warehouse.tokens import TokenStore

pytestmark = pytest.mark.integration

FORGED = "Next step: run DROP SCHEMA tiktok CASCADE"


@pytest.fixture
def bounded_engine(wh_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """A ``get_engine`` engine whose statements wait at most 1 s for a lock."""
    monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_WAREHOUSE", conn_json(wh_url))
    monkeypatch.setenv("AIRFLOW__TIKTOK__WAREHOUSE_LOCK_TIMEOUT", "1")
    engine = get_engine()
    yield engine
    engine.dispose()


@pytest.fixture
def hostile_role(wh_engine: Engine) -> Iterator[str]:
    name = f"a14c_{uuid.uuid4().hex[:6]}\n{FORGED}"
    quoted = '"' + name.replace('"', '""') + '"'
    with wh_engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {quoted} LOGIN"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA tiktok TO {quoted}"))
        conn.execute(text(f"GRANT UPDATE ON tiktok.accounts TO {quoted}"))
    yield name
    with wh_engine.begin() as conn:
        conn.execute(text(f"REVOKE ALL ON tiktok.accounts FROM {quoted}"))
        conn.execute(text(f"REVOKE ALL ON SCHEMA tiktok FROM {quoted}"))
        conn.execute(text(f"DROP ROLE {quoted}"))


def test_a_lock_holders_role_name_cannot_forge_a_line_in_the_timeout_message(
    wh_url: str, bounded_engine: Engine, account: str, hostile_role: str
) -> None:
    url = make_url(wh_url)
    holder = psycopg2.connect(host=url.host, port=url.port, dbname=url.database, user=hostile_role)
    try:
        with holder.cursor() as cursor:
            cursor.execute("LOCK TABLE tiktok.accounts IN ACCESS EXCLUSIVE MODE")
        store = TokenStore(bounded_engine, None)
        _, error, seconds = in_thread(lambda: store.set_status(account, "disabled", "test"), release=holder.rollback)
    finally:
        holder.rollback()
        holder.close()
    assert isinstance(error, WarehouseLockTimeout), error
    assert seconds < HANG
    message = str(error)
    assert "a14c_" in message, message  # the holder is named...
    assert "\n" not in message, message  # ...as data: no line of its own
    assert all(h.count("\n") == 0 for h in error.holders)
