"""A grant TikTok already issued survives the warehouse turning read-only for a moment (attack 14b).

A failover, or a pooler or DNS name still pointing at the old primary (now a standby), answers
writes with ``25006 read_only_sql_transaction`` for the seconds it takes to settle. The refresh
token TikTok just rotated (or the code it just spent) exists only in memory then: giving up at the
first such answer loses the account, as a dropped connection would, which is retried.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import psycopg2
import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from tests.warehouse.conftest import SERVER
from tests.warehouse.test_tokens import expire_access_token, own_warehouse  # noqa: F401  (fixture)
from tiktok_provider.auth import AccountTokens
from tiktok_warehouse.tokens import TokenGrant, TokenStore


class ReadOnlySpell:
    """The database answers writes read-only (new sessions, the old ones dropped) until ``attempts`` waits."""

    def __init__(self, url: str, attempts: int) -> None:
        self.url, self.attempts, self.waits = url, attempts, []
        self.database = make_url(url).database

    def _set(self, on: bool) -> None:
        conn = psycopg2.connect(f"{SERVER}/postgres")  # not the database itself: it may be read-only now
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                value = "on" if on else "off"
                cur.execute(f'ALTER DATABASE "{self.database}" SET default_transaction_read_only = {value}')
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.database,),
                )
        finally:
            conn.close()

    def start(self) -> None:
        self._set(True)

    def end(self) -> None:
        self._set(False)

    def sleep(self, seconds: float) -> None:  # the store's backoff: recorded, not slept
        self.waits.append(seconds)
        if len(self.waits) == self.attempts:
            self.end()


@pytest.fixture
def spell(own_warehouse: str) -> Iterator[Callable[[int], ReadOnlySpell]]:  # noqa: F811
    made: list[ReadOnlySpell] = []

    def make(attempts: int) -> ReadOnlySpell:
        made.append(ReadOnlySpell(own_warehouse, attempts))
        return made[-1]

    yield make
    for one in made:
        one.end()


def test_a_rotated_refresh_token_waits_out_a_read_only_spell(
    own_warehouse: str,  # noqa: F811
    fernet_key: str,
    make_grant: Callable[..., TokenGrant],
    spell: Callable[[int], ReadOnlySpell],
) -> None:
    failover = spell(3)
    engine = create_engine(own_warehouse, pool_pre_ping=True)
    store = TokenStore(engine, fernet_key, sleep=failover.sleep)
    try:
        store.save_grant(make_grant("open-ro"))
        expire_access_token(engine, "open-ro")
        fresh = make_grant("open-ro")

        def refresh(current: AccountTokens) -> TokenGrant:
            failover.start()  # TikTok rotates the token while the warehouse fails over
            return fresh

        got = store.refresh_locked("open-ro", refresh, min_remaining=timedelta(minutes=5))
        assert got.refresh_token == fresh.refresh_token
        assert store.get("open-ro").refresh_token == fresh.refresh_token, "the rotated refresh token was lost"
        assert len(failover.waits) == 3
    finally:
        engine.dispose()


def test_a_connect_grant_waits_out_a_read_only_spell(
    own_warehouse: str,  # noqa: F811
    fernet_key: str,
    make_grant: Callable[..., TokenGrant],
    spell: Callable[[int], ReadOnlySpell],
) -> None:
    failover = spell(2)
    engine = create_engine(own_warehouse, pool_pre_ping=True)
    store = TokenStore(engine, fernet_key, sleep=failover.sleep)
    granted = make_grant("open-ro-connect")
    try:
        store.check_ready()  # the connect flow's check passes; then the warehouse fails over
        failover.start()
        store.save_grant(granted)
        assert store.get("open-ro-connect").refresh_token == granted.refresh_token
        assert len(failover.waits) == 2
    finally:
        engine.dispose()
