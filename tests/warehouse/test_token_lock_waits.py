"""A grant TikTok already issued survives its account row being locked: the lock bound is retried, not fatal.

Real Postgres, the engine from ``get_engine`` with a 1 s ``warehouse_lock_timeout``. Another session
(an admin's psql) locks the account row after the refresh lease is taken, i.e. while TikTok is
answering; the store's retry ``sleep`` is where the test lets that session end its transaction, so
no test sleeps and the bound trips exactly as often as the test says.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine, make_url

from tiktok_warehouse.db import get_engine
from tiktok_warehouse.tables import accounts
from tiktok_warehouse.tokens import AccountTokens, TokenGrant, TokenGrantLost, TokenStore

pytestmark = pytest.mark.integration


def grant(open_id: str) -> TokenGrant:
    return TokenGrant(
        open_id=open_id,
        access_token=f"act.{uuid.uuid4().hex}{uuid.uuid4().hex}",
        expires_in=7200,
        refresh_token=f"rft.{uuid.uuid4().hex}{uuid.uuid4().hex}",
        refresh_expires_in=180 * 86400,
        scopes=frozenset({"user.info.basic", "video.list"}),
        obtained_at=datetime.now(UTC),
    )


@pytest.fixture
def bounded_engine(wh_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_WAREHOUSE", wh_url.replace("postgresql+psycopg2://", "postgresql://", 1))
    monkeypatch.setenv("AIRFLOW__TIKTOK__WAREHOUSE_LOCK_TIMEOUT", "1")
    engine = get_engine()
    yield engine
    engine.dispose()


class AdminLock:
    """Another session that locks an account row on demand and lets go on the ``release_on``-th retry sleep."""

    def __init__(self, wh_url: str, open_id: str, release_on: int | None) -> None:
        self.conn = psycopg2.connect(
            make_url(wh_url).set(drivername="postgresql").render_as_string(hide_password=False),
            application_name="admin psql",
        )
        self.open_id = open_id
        self.release_on = release_on
        self.sleeps: list[float] = []

    def lock(self) -> None:
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM tiktok.accounts WHERE open_id = %s FOR UPDATE", (self.open_id,))

    def sleep(self, seconds: float) -> None:  # the store's sleep between attempts: no real sleep
        self.sleeps.append(seconds)
        if len(self.sleeps) == self.release_on:
            self.conn.rollback()

    def close(self) -> None:
        self.conn.rollback()
        self.conn.close()


@pytest.fixture
def admin(wh_url: str) -> Iterator[Callable[..., AdminLock]]:
    made: list[AdminLock] = []

    def make(open_id: str, *, release_on: int | None) -> AdminLock:
        made.append(AdminLock(wh_url, open_id, release_on))
        return made[-1]

    yield make
    for lock in made:
        lock.close()


def expired_account(store: TokenStore) -> tuple[str, TokenGrant]:
    first = grant(f"open-{uuid.uuid4().hex}")
    store.save_grant(first)
    with store.engine.begin() as conn:
        conn.execute(
            update(accounts)
            .where(accounts.c.open_id == first.open_id)
            .values(access_expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    return first.open_id, first


def refresh_under_lock(
    engine: Engine, key: str, lock: AdminLock, **store_kwargs: Any
) -> tuple[TokenStore, TokenGrant, Callable[[], AccountTokens]]:
    """A store on ``engine``; its refresh (TikTok answering) happens while ``lock`` takes the account row."""
    bounded = TokenStore(engine, key, sleep=lock.sleep, **store_kwargs)
    rotated = grant(lock.open_id)

    def refresh(current: AccountTokens) -> TokenGrant:
        lock.lock()  # after the lease was taken (committed), before the new tokens are stored
        return rotated

    return bounded, rotated, lambda: bounded.refresh_locked(lock.open_id, refresh, min_remaining=timedelta(minutes=5))


def test_a_grant_whose_row_is_locked_is_stored_once_the_lock_is_released(
    bounded_engine: Engine,
    store: TokenStore,
    fernet_key: str,
    admin: Callable[..., AdminLock],
    caplog: pytest.LogCaptureFixture,
) -> None:
    open_id, _ = expired_account(store)
    lock = admin(open_id, release_on=1)
    _, rotated, run = refresh_under_lock(bounded_engine, fernet_key, lock)

    with caplog.at_level(logging.WARNING, logger="tiktok_warehouse"):
        fresh = run()

    assert lock.sleeps == [0.25], "the bound tripped once, then the write went through"
    assert "lock timeout" in caplog.text and "held in memory only" in caplog.text
    assert fresh.refresh_token == rotated.refresh_token
    assert store.get(open_id).refresh_token == rotated.refresh_token
    assert rotated.refresh_token not in caplog.text and rotated.access_token not in caplog.text


def test_a_grant_waits_for_a_lock_longer_than_for_an_unreachable_database(
    bounded_engine: Engine, store: TokenStore, fernet_key: str, admin: Callable[..., AdminLock]
) -> None:
    """The row stays locked past ``store_retry_seconds`` (the outage window): the grant is still stored."""
    open_id, _ = expired_account(store)
    lock = admin(open_id, release_on=3)
    _, rotated, run = refresh_under_lock(bounded_engine, fernet_key, lock, store_retry_seconds=1.5)

    fresh = run()

    assert lock.sleeps == [0.25, 0.5, 1.0]
    assert store.get(open_id).refresh_token == fresh.refresh_token == rotated.refresh_token


def test_a_row_locked_past_the_lock_window_loses_the_grant_with_a_clear_error_and_leaves_the_row_alone(
    bounded_engine: Engine, store: TokenStore, fernet_key: str, admin: Callable[..., AdminLock]
) -> None:
    open_id, first = expired_account(store)
    lock = admin(open_id, release_on=None)
    _, rotated, run = refresh_under_lock(
        bounded_engine, fernet_key, lock, store_retry_seconds=0.5, store_lock_wait_seconds=2.5
    )

    with pytest.raises(TokenGrantLost) as info:
        run()

    message = str(info.value)
    assert "lock timeout" in message and "authorize the app again" in message
    assert rotated.refresh_token not in message
    assert len(lock.sleeps) >= 1
    lock.conn.rollback()
    assert store.get(open_id).refresh_token == first.refresh_token  # the stored tokens as they were


def test_a_reconnect_whose_row_is_locked_is_stored_once_the_lock_is_released(
    bounded_engine: Engine, store: TokenStore, fernet_key: str, admin: Callable[..., AdminLock]
) -> None:
    open_id, _ = expired_account(store)
    lock = admin(open_id, release_on=1)
    bounded = TokenStore(bounded_engine, fernet_key, sleep=lock.sleep)
    again = grant(open_id)
    lock.lock()

    bounded.save_grant(again, display_name="Reconnected")

    assert lock.sleeps == [0.25]
    assert store.get(open_id).refresh_token == again.refresh_token
