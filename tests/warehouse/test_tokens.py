"""The token store: encryption at rest, clear key errors, reconnects, and refreshes under a lease."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text, update
from sqlalchemy.engine import Engine, make_url

from tiktok_warehouse import migrate
from tiktok_warehouse.loads import Warehouse
from tiktok_warehouse.tables import accounts
from tiktok_warehouse.tokens import (
    GENERATE_KEY_COMMAND,
    AccountNotActive,
    AccountNotFound,
    AccountTokens,
    TokenDecryptionError,
    TokenEncryptionKeyInvalid,
    TokenEncryptionKeyMissing,
    TokenGrant,
    TokenGrantLost,
    TokenRefreshTimeout,
    TokenStore,
    TokenStoreError,
    TokenStoreNotReady,
    TokenStoreUnavailable,
)

#: The server the warehouse tests' databases live on (as in conftest.py).
SERVER = os.environ.get("TIKTOK_WAREHOUSE_TEST_SERVER", "postgresql://postgres@127.0.0.1:5432")


class ReauthRequired(Exception):
    """What the hook raises when TikTok answers invalid_grant: carries ``reauth_required``."""

    reauth_required = True


def raw_row(engine: Engine, open_id: str) -> dict[str, object]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT * FROM tiktok.accounts WHERE open_id = :o"),
            {"o": open_id},
        ).one()
    return dict(row._mapping)


# -- encryption at rest ---------------------------------------------------------------------------


def test_tokens_are_encrypted_at_rest(
    store: TokenStore, wh_engine: Engine, make_grant: Callable[..., TokenGrant]
) -> None:
    granted = make_grant("open-at-rest")
    store.save_grant(granted)
    row = raw_row(wh_engine, "open-at-rest")
    for column, token in (("access_token_enc", granted.access_token), ("refresh_token_enc", granted.refresh_token)):
        stored = bytes(row[column])  # type: ignore[arg-type]
        assert token.encode() not in stored
        assert stored.startswith(b"gAAAAA")  # a Fernet token
    tokens = store.get("open-at-rest")
    assert (tokens.access_token, tokens.refresh_token) == (granted.access_token, granted.refresh_token)


def test_pg_dump_contains_no_plaintext_token(
    store: TokenStore, wh_url: str, make_grant: Callable[..., TokenGrant]
) -> None:
    granted = make_grant("open-pg-dump")
    store.save_grant(granted, display_name="Dumped Creator")
    url = make_url(wh_url)
    dump = subprocess.run(
        [
            "pg_dump",
            "-h",
            url.host or "127.0.0.1",
            "-p",
            str(url.port or 5432),
            "-U",
            url.username or "postgres",
            "--schema",
            "tiktok",
            "--inserts",
            url.database or "",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "Dumped Creator" in dump  # the dump did include the account row
    assert granted.access_token not in dump
    assert granted.refresh_token not in dump
    # Not even the random part of a token, in case something stripped the "act." prefix.
    assert granted.access_token.removeprefix("act.") not in dump
    assert granted.refresh_token.removeprefix("rft.") not in dump


def test_reprs_do_not_show_tokens(store: TokenStore, make_grant: Callable[..., TokenGrant]) -> None:
    granted = make_grant("open-repr")
    store.save_grant(granted)
    tokens = store.get("open-repr")
    for shown in (repr(granted), repr(tokens), str(tokens), repr(store)):
        assert granted.access_token not in shown
        assert granted.refresh_token not in shown
    assert "open-repr" in repr(tokens)


def test_ciphertexts_cannot_be_swapped_between_accounts(
    store: TokenStore, wh_engine: Engine, make_grant: Callable[..., TokenGrant]
) -> None:
    store.save_grant(make_grant("open-swap-a"))
    store.save_grant(make_grant("open-swap-b"))
    stolen = raw_row(wh_engine, "open-swap-a")["access_token_enc"]
    with wh_engine.begin() as conn:
        conn.execute(update(accounts).where(accounts.c.open_id == "open-swap-b").values(access_token_enc=stolen))
    with pytest.raises(TokenDecryptionError, match="open-swap-b"):
        store.get("open-swap-b")


# -- keys -----------------------------------------------------------------------------------------


def test_missing_key_says_how_to_fix_it(wh_engine: Engine, make_grant: Callable[..., TokenGrant]) -> None:
    keyless = TokenStore(wh_engine, None, key_conn_id="tiktok_default")
    with pytest.raises(TokenEncryptionKeyMissing) as missing:
        keyless.save_grant(make_grant("open-keyless"))
    message = str(missing.value)
    assert "token_encryption_key" in message
    assert "tiktok_default" in message
    assert "extra" in message
    assert GENERATE_KEY_COMMAND in message
    # The command in the message really produces a usable key.
    key = subprocess.run(
        ["python3", "-c", "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Fernet(key)


def test_missing_key_blocks_reads_but_not_listing(store: TokenStore, wh_engine: Engine, account: str) -> None:
    keyless = TokenStore(wh_engine, "  ")
    with pytest.raises(TokenEncryptionKeyMissing):
        keyless.get(account)
    with pytest.raises(TokenEncryptionKeyMissing):
        keyless.refresh_locked(account, lambda current: pytest.fail("no refresh"), min_remaining=timedelta(0))
    assert account in {a.open_id for a in keyless.list_accounts()}
    keyless.set_status(account, "disabled", "paused by the owner")


def test_invalid_key_is_reported_without_echoing_it(wh_engine: Engine) -> None:
    with pytest.raises(TokenEncryptionKeyInvalid) as invalid:
        TokenStore(wh_engine, "not-a-fernet-key")
    assert "not-a-fernet-key" not in str(invalid.value)
    assert "token_encryption_key" in str(invalid.value)


def test_wrong_key_names_the_account_and_not_the_token(
    store: TokenStore, wh_engine: Engine, make_grant: Callable[..., TokenGrant]
) -> None:
    granted = make_grant("open-wrong-key")
    store.save_grant(granted)
    other = TokenStore(wh_engine, Fernet.generate_key().decode())
    with pytest.raises(TokenDecryptionError) as wrong:
        other.get("open-wrong-key")
    message = str(wrong.value)
    assert "open-wrong-key" in message
    assert "token_encryption_key" in message
    assert granted.access_token not in message


def test_key_rotation_reads_old_tokens_and_reencrypts_with_the_new_key(
    wh_engine: Engine, fernet_key: str, make_grant: Callable[..., TokenGrant]
) -> None:
    old = TokenStore(wh_engine, fernet_key)
    granted = make_grant("open-rotate")
    old.save_grant(granted)
    new_key = Fernet.generate_key().decode()
    rotating = TokenStore(wh_engine, f"{new_key},{fernet_key}")
    assert rotating.get("open-rotate").access_token == granted.access_token
    fresh = make_grant("open-rotate")
    rotating.refresh_locked("open-rotate", lambda current: fresh, min_remaining=timedelta(days=1))
    only_new = TokenStore(wh_engine, new_key)
    assert only_new.get("open-rotate").refresh_token == fresh.refresh_token


# -- connect and reconnect ------------------------------------------------------------------------


def test_reconnect_replaces_tokens_and_reactivates(
    store: TokenStore, wh_engine: Engine, make_grant: Callable[..., TokenGrant]
) -> None:
    first = make_grant("open-reconnect", scopes=frozenset({"user.info.basic"}))
    store.save_grant(first, display_name="First Name", username="first", avatar_url="https://a/1.jpg")
    connected = raw_row(wh_engine, "open-reconnect")
    store.set_status("open-reconnect", "reauth_required", "invalid_grant: refresh token revoked")

    second = make_grant(
        "open-reconnect",
        scopes=frozenset({"user.info.basic", "video.list"}),
        obtained_at=datetime.now(UTC) + timedelta(minutes=1),
    )
    store.save_grant(second, username="second")
    tokens = store.get("open-reconnect")
    row = raw_row(wh_engine, "open-reconnect")

    assert (tokens.access_token, tokens.refresh_token) == (second.access_token, second.refresh_token)
    assert tokens.access_expires_at == second.obtained_at + timedelta(seconds=second.expires_in)
    assert tokens.refresh_expires_at == second.obtained_at + timedelta(seconds=second.refresh_expires_in)
    assert tokens.scopes == {"user.info.basic", "video.list"}
    assert (row["status"], row["status_reason"]) == ("active", None)
    assert row["connected_at"] == connected["connected_at"]  # kept on reconnect
    assert row["updated_at"] > connected["updated_at"]
    # Profile fields not given on reconnect keep their values; given ones are replaced.
    assert (row["display_name"], row["username"], row["avatar_url"]) == ("First Name", "second", "https://a/1.jpg")


def test_unknown_account(store: TokenStore) -> None:
    with pytest.raises(AccountNotFound, match="open-nobody"):
        store.get("open-nobody")
    with pytest.raises(AccountNotFound):
        store.set_status("open-nobody", "disabled")
    with pytest.raises(AccountNotFound):
        store.refresh_locked("open-nobody", lambda current: pytest.fail("no refresh"), min_remaining=timedelta(0))


def test_set_status_and_list_accounts(store: TokenStore, new_account: Callable[..., str]) -> None:
    active, paused, broken = new_account(), new_account(), new_account()
    store.set_status(paused, "disabled", "paused by the owner")
    store.set_status(broken, "reauth_required", "refresh failed for act.abcdefghijklmnop")
    mine = [active, paused, broken]

    assert [a.open_id for a in store.list_accounts(open_ids=mine)] == [active]
    everyone = store.list_accounts(statuses=("active", "disabled", "reauth_required"), open_ids=mine)
    assert [a.open_id for a in everyone] == sorted(mine)
    by_id = {a.open_id: a for a in everyone}
    assert by_id[paused].status_reason == "paused by the owner"
    assert "act.abcdefghijklmnop" not in (by_id[broken].status_reason or "")  # reasons are scrubbed
    assert store.list_accounts(open_ids=[]) == []
    with pytest.raises(ValueError, match="Unknown account status"):
        store.set_status(active, "sleeping")
    with pytest.raises(ValueError, match="Unknown account status"):
        store.list_accounts(statuses=("sleeping",))


# -- refresh --------------------------------------------------------------------------------------


def test_valid_token_is_returned_without_refreshing(store: TokenStore, account: str) -> None:
    current = store.get(account)
    got = store.refresh_locked(
        account, lambda c: pytest.fail("refreshed a valid token"), min_remaining=timedelta(minutes=5)
    )
    assert got.access_token == current.access_token


def test_stale_token_forces_a_refresh_unless_someone_else_refreshed(
    store: TokenStore, account: str, make_grant: Callable[..., TokenGrant]
) -> None:
    current = store.get(account)
    fresh = make_grant(account)
    got = store.refresh_locked(
        account, lambda c: fresh, min_remaining=timedelta(minutes=5), stale_access_token=current.access_token
    )
    assert got.access_token == fresh.access_token
    # The rejected token is no longer the stored one: another worker already refreshed.
    again = store.refresh_locked(
        account,
        lambda c: pytest.fail("refreshed twice"),
        min_remaining=timedelta(minutes=5),
        stale_access_token=current.access_token,
    )
    assert again.access_token == fresh.access_token


def expire_access_token(engine: Engine, open_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(accounts)
            .where(accounts.c.open_id == open_id)
            .values(access_expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )


def run_threads(count: int, target: Callable[[], object]) -> tuple[list[object], list[BaseException]]:
    results: list[object] = []
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def work() -> None:
        start.wait()
        try:
            results.append(target())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, errors


def test_eight_workers_on_an_expired_token_refresh_exactly_once(
    store: TokenStore, wh_engine: Engine, account: str, make_grant: Callable[..., TokenGrant]
) -> None:
    expire_access_token(wh_engine, account)
    before = store.get(account)
    calls: list[AccountTokens] = []
    fresh = make_grant(account, expires_in=7200, refresh_expires_in=86400)

    def refresh(current: AccountTokens) -> TokenGrant:
        calls.append(current)
        threading.Event().wait(0.2)  # an HTTP call: the others pile up on the row lock meanwhile
        return fresh

    results, errors = run_threads(8, lambda: store.refresh_locked(account, refresh, min_remaining=timedelta(minutes=5)))

    assert errors == []
    assert len(calls) == 1
    assert calls[0].refresh_token == before.refresh_token
    assert {r.access_token for r in results} == {fresh.access_token}  # type: ignore[attr-defined]
    stored = store.get(account)
    assert stored.refresh_token == fresh.refresh_token  # the rotated refresh token is persisted
    assert stored.access_expires_at == fresh.obtained_at + timedelta(seconds=7200)
    assert stored.refresh_expires_at == fresh.obtained_at + timedelta(seconds=86400)


def test_reauth_required_is_committed_and_stops_the_other_workers(
    store: TokenStore, wh_engine: Engine, account: str
) -> None:
    expire_access_token(wh_engine, account)
    current = store.get(account)
    calls: list[str] = []

    def refresh(tokens: AccountTokens) -> TokenGrant:
        calls.append(tokens.open_id)
        threading.Event().wait(0.2)
        # A careless message that echoes the token: it must not reach the database.
        raise ReauthRequired(f"invalid_grant: refresh token {tokens.refresh_token} was revoked")

    results, errors = run_threads(8, lambda: store.refresh_locked(account, refresh, min_remaining=timedelta(minutes=5)))

    assert results == []
    assert len(calls) == 1
    assert sum(isinstance(e, ReauthRequired) for e in errors) == 1
    waiting = [e for e in errors if isinstance(e, AccountNotActive)]
    assert len(waiting) == 7
    assert all(e.reauth_required for e in waiting)
    row = raw_row(wh_engine, account)
    assert row["status"] == "reauth_required"
    assert "invalid_grant" in row["status_reason"]  # type: ignore[operator]
    assert current.refresh_token not in row["status_reason"]  # type: ignore[operator]
    assert store.get(account).refresh_token == current.refresh_token


def test_other_refresh_errors_roll_back(store: TokenStore, wh_engine: Engine, account: str) -> None:
    expire_access_token(wh_engine, account)
    before = raw_row(wh_engine, account)

    def refresh(tokens: AccountTokens) -> TokenGrant:
        raise TimeoutError("token endpoint timed out")

    with pytest.raises(TimeoutError):
        store.refresh_locked(account, refresh, min_remaining=timedelta(minutes=5))
    assert raw_row(wh_engine, account) == before


def test_refresh_answering_for_another_account_stores_nothing(
    store: TokenStore, account: str, make_grant: Callable[..., TokenGrant]
) -> None:
    before = store.get(account)
    with pytest.raises(ValueError, match="another account"):
        store.refresh_locked(
            account,
            lambda c: make_grant("open-someone-else"),
            min_remaining=timedelta(minutes=5),
            stale_access_token=before.access_token,
        )
    assert store.get(account).access_token == before.access_token


def test_tokens_never_reach_the_logs(
    store: TokenStore, wh_engine: Engine, make_grant: Callable[..., TokenGrant], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    granted = make_grant("open-logs")
    store.save_grant(granted)
    expire_access_token(wh_engine, "open-logs")
    fresh = make_grant("open-logs")
    store.refresh_locked("open-logs", lambda c: fresh, min_remaining=timedelta(minutes=5))
    expire_access_token(wh_engine, "open-logs")
    with pytest.raises(ReauthRequired):
        store.refresh_locked(
            "open-logs",
            lambda c: (_ for _ in ()).throw(ReauthRequired(f"revoked {c.refresh_token}")),
            min_remaining=timedelta(minutes=5),
        )
    assert "open-logs" in caplog.text
    for token in (granted.access_token, granted.refresh_token, fresh.access_token, fresh.refresh_token):
        assert token not in caplog.text


def test_token_store_works_with_psycopg3(
    wh_engine_psycopg3: Engine, fernet_key: str, make_grant: Callable[..., TokenGrant]
) -> None:
    """PostgresHook hands out psycopg 3 engines; the store must not depend on the driver."""
    store = TokenStore(wh_engine_psycopg3, fernet_key)
    granted = make_grant("open-psycopg3")
    store.save_grant(granted)
    assert store.get("open-psycopg3").refresh_token == granted.refresh_token
    fresh = make_grant("open-psycopg3")
    got = store.refresh_locked(
        "open-psycopg3", lambda c: fresh, min_remaining=timedelta(0), stale_access_token=granted.access_token
    )
    assert got.refresh_token == fresh.refresh_token == store.get("open-psycopg3").refresh_token
    store.set_status("open-psycopg3", "disabled")
    assert store.list_accounts(statuses=("disabled",), open_ids=["open-psycopg3"])[0].status == "disabled"


def test_a_refresh_in_flight_does_not_block_loads_of_the_account(
    store: TokenStore, wh_engine: Engine, account: str, make_grant: Callable[..., TokenGrant]
) -> None:
    """The refresh holds its row lock across an HTTP call; inserting the account's videos must not wait."""
    expire_access_token(wh_engine, account)
    in_flight, release = threading.Event(), threading.Event()

    def slow_refresh(current: AccountTokens) -> TokenGrant:
        in_flight.set()
        release.wait(30)
        return make_grant(account)

    refresher = threading.Thread(
        target=store.refresh_locked, args=(account, slow_refresh), kwargs={"min_remaining": timedelta(minutes=5)}
    )
    refresher.start()
    try:
        assert in_flight.wait(10)
        loaded: list[object] = []
        video = {"id": f"lock-{account}", "title": "posted during a refresh", "like_count": 1}
        loader = threading.Thread(
            target=lambda: loaded.append(
                Warehouse(wh_engine).upsert_videos(account, [video], captured_at=datetime.now(UTC))
            )
        )
        loader.start()
        loader.join(timeout=5)
        assert loaded, "the video load waited for the token refresh's row lock"
    finally:
        release.set()
        refresher.join(timeout=30)


# -- refresh lease: no transaction across the HTTP call (audit item 9) ----------------------------

APP = "tiktok_refresh_under_test"


@pytest.fixture
def app_engine(wh_url: str) -> Iterator[Engine]:
    """An engine whose sessions can be told apart (and killed) in pg_stat_activity; no pre-ping."""
    engine = create_engine(wh_url, connect_args={"application_name": APP})
    yield engine
    engine.dispose()


def admin_sql(url: str, sql: str, **params: object) -> list[tuple]:
    """Run SQL as the server admin on its own autocommit connection (as a DBA or a failover would)."""
    database = make_url(url).database
    conn = psycopg2.connect(f"{SERVER}/{database}")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def kill_app_sessions(url: str) -> int:
    return len(
        admin_sql(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %(app)s",
            app=APP,
        )
    )


def test_no_transaction_or_row_lock_is_held_while_tiktok_is_called(
    app_engine: Engine, wh_url: str, fernet_key: str, make_grant: Callable[..., TokenGrant]
) -> None:
    store = TokenStore(app_engine, fernet_key)
    open_id = f"open-{uuid.uuid4().hex}"
    store.save_grant(make_grant(open_id))
    expire_access_token(app_engine, open_id)
    seen: dict[str, object] = {}
    fresh = make_grant(open_id)

    def refresh(current: AccountTokens) -> TokenGrant:
        seen["in_transaction"] = admin_sql(
            wh_url,
            "SELECT pid FROM pg_stat_activity WHERE application_name = %(app)s AND state LIKE 'idle in transaction%%'",
            app=APP,
        )
        # Another session can lock the row at once: nobody holds it across this call.
        seen["row_free"] = admin_sql(
            wh_url, "SELECT open_id FROM tiktok.accounts WHERE open_id = %(o)s FOR UPDATE NOWAIT", o=open_id
        )
        return fresh

    store.refresh_locked(open_id, refresh, min_remaining=timedelta(minutes=5))
    assert seen["in_transaction"] == [], "a session sat in a transaction during the HTTP call"
    assert seen["row_free"] == [(open_id,)]


def test_the_rotated_token_is_stored_when_the_session_is_killed_during_the_http_call(
    app_engine: Engine, wh_url: str, fernet_key: str, make_grant: Callable[..., TokenGrant]
) -> None:
    """A failover, an idle-in-transaction timeout or a pooler drops the session while TikTok rotates."""
    store = TokenStore(app_engine, fernet_key, sleep=lambda seconds: None)
    open_id = f"open-{uuid.uuid4().hex}"
    store.save_grant(make_grant(open_id))
    expire_access_token(app_engine, open_id)
    fresh = make_grant(open_id)
    killed: list[int] = []

    def refresh(current: AccountTokens) -> TokenGrant:
        killed.append(kill_app_sessions(wh_url))  # TikTok has rotated the token by the time it answers
        return fresh

    got = store.refresh_locked(open_id, refresh, min_remaining=timedelta(minutes=5))
    assert killed == [1], "the test killed the store's (pooled) session"
    assert got.refresh_token == fresh.refresh_token
    stored = store.get(open_id)
    assert (stored.access_token, stored.refresh_token) == (fresh.access_token, fresh.refresh_token)
    assert raw_row(app_engine, open_id)["status"] == "active"


def test_a_dead_lease_holder_blocks_the_others_no_longer_than_its_lease(
    store: TokenStore, wh_engine: Engine, account: str, make_grant: Callable[..., TokenGrant]
) -> None:
    expire_access_token(wh_engine, account)
    with wh_engine.begin() as conn:  # a worker took the lease, then its machine died
        conn.execute(
            text(
                "UPDATE tiktok.accounts SET refresh_lease_owner = 'dead-host:1:deadbeef',"
                " refresh_lease_until = now() + interval '1.5 seconds' WHERE open_id = :o"
            ),
            {"o": account},
        )
    calls: list[AccountTokens] = []
    fresh = make_grant(account)
    started = time.monotonic()
    got = store.refresh_locked(
        account, lambda current: calls.append(current) or fresh, min_remaining=timedelta(minutes=5)
    )
    waited = time.monotonic() - started
    assert 1.2 < waited < 1.5 + 2.0, waited
    assert len(calls) == 1
    assert got.access_token == fresh.access_token
    row = raw_row(wh_engine, account)
    assert (row["refresh_lease_owner"], row["refresh_lease_until"]) == (None, None)


def test_waiting_for_a_live_lease_gives_up_without_calling_tiktok(
    store: TokenStore, wh_engine: Engine, account: str
) -> None:
    expire_access_token(wh_engine, account)
    with wh_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE tiktok.accounts SET refresh_lease_owner = 'busy-host:1:cafe',"
                " refresh_lease_until = now() + interval '1 hour' WHERE open_id = :o"
            ),
            {"o": account},
        )
    with pytest.raises(TokenRefreshTimeout, match="busy-host"):
        store.refresh_locked(
            account,
            lambda current: pytest.fail("refreshed under someone else's lease"),
            min_remaining=timedelta(minutes=5),
            max_wait=timedelta(seconds=0.5),
        )
    assert not issubclass(TokenRefreshTimeout, TokenStoreError), "transient: the operators must let Airflow retry it"


def overdue_holder(
    store: TokenStore, wh_engine: Engine, account: str, fresh: TokenGrant
) -> tuple[threading.Thread, threading.Event, list[object]]:
    """Holder A takes the lease and waits for TikTok; its lease is then made to have run out."""
    expire_access_token(wh_engine, account)
    in_flight, release = threading.Event(), threading.Event()
    results: list[object] = []

    def slow(current: AccountTokens) -> TokenGrant:
        in_flight.set()
        release.wait(30)
        return fresh

    holder = threading.Thread(
        target=lambda: results.append(store.refresh_locked(account, slow, min_remaining=timedelta(minutes=5)))
    )
    holder.start()
    assert in_flight.wait(10)
    with wh_engine.begin() as conn:  # A's lease runs out while it still waits for TikTok
        conn.execute(
            text("UPDATE tiktok.accounts SET refresh_lease_until = now() - interval '1 second' WHERE open_id = :o"),
            {"o": account},
        )
    return holder, release, results


def refused_taker(store: TokenStore, account: str, lease: timedelta) -> tuple[threading.Thread, list[object]]:
    """Worker B takes the lease over; TikTok refuses the token it presents (A's request rotated it)."""
    outcome: list[object] = []

    def take_over() -> None:
        try:
            outcome.append(
                store.refresh_locked(
                    account,
                    lambda c: (_ for _ in ()).throw(ReauthRequired("invalid_grant: token was replaced")),
                    min_remaining=timedelta(minutes=5),
                    lease=lease,
                )
            )
        except BaseException as exc:
            outcome.append(exc)

    other = threading.Thread(target=take_over)
    other.start()
    return other, outcome


def test_a_worker_refused_after_taking_over_an_overdue_lease_waits_for_the_holder_to_store(
    store: TokenStore, wh_engine: Engine, account: str, make_grant: Callable[..., TokenGrant]
) -> None:
    """Holder A outlives its lease; B takes over, TikTok refuses B's (just rotated) token: B waits for A's grant."""
    fresh = make_grant(account)
    holder, release, results = overdue_holder(store, wh_engine, account, fresh)
    try:
        a_owner = raw_row(wh_engine, account)["refresh_lease_owner"]
        other, outcome = refused_taker(store, account, lease=timedelta(seconds=60))
        deadline = time.monotonic() + 10
        while raw_row(wh_engine, account)["refresh_lease_owner"] == a_owner and time.monotonic() < deadline:
            time.sleep(0.05)  # until B holds the lease; TikTok refuses it at once
        time.sleep(0.5)
        assert raw_row(wh_engine, account)["refresh_lease_owner"] != a_owner
        assert other.is_alive() and outcome == [], "B waits for A instead of condemning the account"
        assert raw_row(wh_engine, account)["status"] == "active"
    finally:
        release.set()
        holder.join(30)
    other.join(30)
    assert [getattr(r, "access_token", r) for r in results] == [fresh.access_token]
    assert [getattr(r, "access_token", r) for r in outcome] == [fresh.access_token], "B uses what A stored"
    row = raw_row(wh_engine, account)
    assert (row["status"], row["status_reason"], row["refresh_lease_owner"]) == ("active", None, None)
    assert store.get(account).refresh_token == fresh.refresh_token


def test_an_overdue_holder_that_stores_after_all_undoes_the_reauth_its_rotation_caused(
    store: TokenStore, wh_engine: Engine, account: str, make_grant: Callable[..., TokenGrant]
) -> None:
    """B waits one lease (here 1 s) for A, then marks the account; A's grant, stored later still, must win."""
    fresh = make_grant(account)
    holder, release, results = overdue_holder(store, wh_engine, account, fresh)
    try:
        other, outcome = refused_taker(store, account, lease=timedelta(seconds=1))
        other.join(10)
        assert not other.is_alive(), "the second worker waited for the first one's row lock"
        assert [type(e) for e in outcome] == [ReauthRequired]
        assert raw_row(wh_engine, account)["status"] == "reauth_required"
    finally:
        release.set()
        holder.join(30)
    assert [getattr(r, "access_token", r) for r in results] == [fresh.access_token]
    row = raw_row(wh_engine, account)
    assert (row["status"], row["status_reason"]) == ("active", None)
    assert store.get(account).refresh_token == fresh.refresh_token


# -- a grant exists only in memory until stored: retry the database (items 8 and 9) --------------


@pytest.fixture
def own_warehouse(scratch_db: str) -> Iterator[str]:
    """A migrated warehouse of its own: these tests lock everyone out of it for a while."""
    engine = create_engine(scratch_db)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    yield scratch_db
    admin_sql(scratch_db, "SELECT 1")  # still reachable for the fixture's DROP


def lock_out(url: str, *, allow: bool) -> None:
    """Refuse (or allow again) every new connection to the database, and drop the existing ones."""
    database = make_url(url).database
    conn = psycopg2.connect(f"{SERVER}/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"true" if allow else "false"}')
            if not allow:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database,),
                )
    finally:
        conn.close()


class Outage:
    """The database refuses connections until the store has waited ``attempts`` times."""

    def __init__(self, url: str, attempts: int) -> None:
        self.url, self.attempts, self.waits = url, attempts, []

    def start(self) -> None:
        lock_out(self.url, allow=False)

    def sleep(self, seconds: float) -> None:  # the store's backoff: recorded, not slept
        self.waits.append(seconds)
        if len(self.waits) == self.attempts:
            lock_out(self.url, allow=True)


def test_a_refreshed_grant_waits_in_memory_until_the_database_is_back(
    own_warehouse: str, fernet_key: str, make_grant: Callable[..., TokenGrant], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    engine = create_engine(own_warehouse)
    outage = Outage(own_warehouse, attempts=3)
    store = TokenStore(engine, fernet_key, sleep=outage.sleep)
    try:
        store.save_grant(make_grant("open-outage"))
        expire_access_token(engine, "open-outage")
        fresh = make_grant("open-outage")

        def refresh(current: AccountTokens) -> TokenGrant:
            outage.start()  # the warehouse goes away while TikTok rotates the token
            return fresh

        got = store.refresh_locked("open-outage", refresh, min_remaining=timedelta(minutes=5))
        assert len(outage.waits) == 3
        assert got.refresh_token == fresh.refresh_token
        assert store.get("open-outage").refresh_token == fresh.refresh_token
    finally:
        lock_out(own_warehouse, allow=True)
        engine.dispose()
    assert "retrying" in caplog.text
    assert fresh.refresh_token not in caplog.text and fresh.access_token not in caplog.text


def test_a_connect_grant_waits_in_memory_until_the_database_is_back(
    own_warehouse: str, fernet_key: str, make_grant: Callable[..., TokenGrant]
) -> None:
    engine = create_engine(own_warehouse)
    outage = Outage(own_warehouse, attempts=2)
    store = TokenStore(engine, fernet_key, sleep=outage.sleep)
    granted = make_grant("open-connect-outage")
    try:
        outage.start()
        store.save_grant(granted)
        assert len(outage.waits) == 2
        assert store.get("open-connect-outage").refresh_token == granted.refresh_token
    finally:
        lock_out(own_warehouse, allow=True)
        engine.dispose()


def test_a_grant_that_cannot_be_stored_is_reported_without_the_token(
    own_warehouse: str, fernet_key: str, make_grant: Callable[..., TokenGrant], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    engine = create_engine(own_warehouse)
    waits: list[float] = []
    store = TokenStore(engine, fernet_key, sleep=waits.append)
    granted = replace(make_grant("open-lost"), log_id="20260302093000ABCDEF0123456789ABCD")
    try:
        lock_out(own_warehouse, allow=False)
        with pytest.raises(TokenGrantLost) as lost:
            store.save_grant(granted)
    finally:
        lock_out(own_warehouse, allow=True)
        engine.dispose()
    message = str(lost.value)
    for part in ("open-lost", granted.log_id, "authorize the app again", "tiktok_connect_account"):
        assert part in message
    assert 1 < len(waits) < 30
    for token in (granted.access_token, granted.refresh_token):
        assert token not in message and token not in caplog.text
    assert lost.value.__cause__ is None and lost.value.__context__ is None, "no chained error with SQL parameters"


# -- check before spending a single-use credential (item 8) ---------------------------------------


def test_check_ready_passes_on_a_migrated_writable_warehouse_and_leaves_no_trace(
    store: TokenStore, wh_engine: Engine
) -> None:
    with wh_engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM tiktok.accounts")).scalar()
    store.check_ready()
    with wh_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tiktok.accounts")).scalar() == before


def test_check_ready_refuses_without_a_key(wh_engine: Engine) -> None:
    with pytest.raises(TokenEncryptionKeyMissing):
        TokenStore(wh_engine, None).check_ready()


def test_check_ready_names_an_unmigrated_warehouse(scratch_db: str, fernet_key: str) -> None:
    engine = create_engine(scratch_db)
    try:
        with pytest.raises(TokenStoreNotReady, match="migrate") as not_ready:
            TokenStore(engine, fernet_key).check_ready()
        assert not not_ready.value.retryable
        migrate.upgrade(engine, "0001")  # the schema of a release without the refresh lease
        with pytest.raises(TokenStoreNotReady, match="lacks columns"):
            TokenStore(engine, fernet_key).check_ready()
    finally:
        engine.dispose()


def test_check_ready_names_a_read_only_warehouse(own_warehouse: str, fernet_key: str) -> None:
    engine = create_engine(own_warehouse, connect_args={"options": "-c default_transaction_read_only=on"})
    try:
        with pytest.raises(TokenStoreNotReady, match="read-only"):
            TokenStore(engine, fernet_key).check_ready()
    finally:
        engine.dispose()


def test_check_ready_on_an_unreachable_warehouse_is_retryable(fernet_key: str) -> None:
    engine = create_engine("postgresql+psycopg2://nobody@127.0.0.1:1/tiktok")
    with pytest.raises(TokenStoreUnavailable) as unavailable:
        TokenStore(engine, fernet_key).check_ready()
    assert unavailable.value.retryable
    assert "Nothing was sent to TikTok" in str(unavailable.value)


# -- answers that leave a value out are stored, not thrown away (item 10) ------------------------


def test_a_refresh_without_scope_or_refresh_lifetime_keeps_what_is_known(
    store: TokenStore, wh_engine: Engine, account: str, make_grant: Callable[..., TokenGrant]
) -> None:
    before = store.get(account)
    fresh = replace(make_grant(account), scopes=None, refresh_expires_in=None)
    got = store.refresh_locked(
        account, lambda current: fresh, min_remaining=timedelta(0), stale_access_token=before.access_token
    )
    stored = store.get(account)
    assert stored.refresh_token == got.refresh_token == fresh.refresh_token
    assert stored.scopes == got.scopes == before.scopes
    assert stored.refresh_expires_at == before.refresh_expires_at, "a rotation is not assumed to extend the life"
    assert not before.refresh_expiry_estimated
    assert stored.refresh_expiry_estimated and got.refresh_expiry_estimated, "TikTok did not state this token's life"


def test_a_connect_without_scope_or_refresh_lifetime_is_stored_conservatively(
    store: TokenStore, make_grant: Callable[..., TokenGrant]
) -> None:
    open_id = f"open-{uuid.uuid4().hex}"
    first = replace(make_grant(open_id), scopes=None, refresh_expires_in=None)
    store.save_grant(first)
    stored = store.get(open_id)
    assert stored.scopes == frozenset()
    assert stored.refresh_expires_at == first.obtained_at + timedelta(days=180)
    assert stored.refresh_expiry_estimated
    [listed] = store.list_accounts(open_ids=[open_id])
    assert listed.refresh_expiry_estimated
    store.save_grant(make_grant(open_id, scopes=frozenset({"user.info.basic"})))
    assert not store.get(open_id).refresh_expiry_estimated  # a stated lifetime replaces the estimate
    store.save_grant(replace(make_grant(open_id), scopes=None))  # a reconnect that does not say
    assert store.get(open_id).scopes == {"user.info.basic"}


# -- what an on-call would try: keys rotated and accounts reconnected mid-refresh -----------------


def refresh_in_background(
    store: TokenStore, open_id: str, grant: TokenGrant
) -> tuple[threading.Thread, threading.Event, threading.Event, list[object]]:
    """Start a refresh whose HTTP call waits for ``release``; return (thread, in_flight, release, results)."""
    in_flight, release = threading.Event(), threading.Event()
    results: list[object] = []

    def slow(current: AccountTokens) -> TokenGrant:
        in_flight.set()
        release.wait(30)
        return grant

    def run() -> None:
        try:
            results.append(store.refresh_locked(open_id, slow, min_remaining=timedelta(minutes=5)))
        except BaseException as exc:
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert in_flight.wait(10)
    return thread, in_flight, release, results


def test_a_key_rotated_while_a_refresh_is_in_flight_loses_nothing(
    wh_engine: Engine, fernet_key: str, make_grant: Callable[..., TokenGrant]
) -> None:
    """A worker started with the old key refreshes; meanwhile the connection gets "new,old"."""
    old = TokenStore(wh_engine, fernet_key)
    open_id = f"open-{uuid.uuid4().hex}"
    old.save_grant(make_grant(open_id))
    expire_access_token(wh_engine, open_id)
    new_key = Fernet.generate_key().decode()
    rotated = TokenStore(wh_engine, f"{new_key},{fernet_key}")
    fresh = make_grant(open_id)
    thread, _, release, results = refresh_in_background(old, open_id, fresh)
    waiter = threading.Thread(
        target=lambda: results.append(
            rotated.refresh_locked(
                open_id, lambda c: pytest.fail("refreshed twice"), min_remaining=timedelta(minutes=5)
            )
        )
    )
    waiter.start()
    time.sleep(0.3)  # the waiter polls the lease held by the old-key worker
    release.set()
    thread.join(30)
    waiter.join(30)
    assert [getattr(r, "refresh_token", r) for r in results] == [fresh.refresh_token] * 2
    # The next refresh (by a new-key worker) re-encrypts: then the old key can be dropped.
    newer = make_grant(open_id)
    rotated.refresh_locked(open_id, lambda c: newer, min_remaining=timedelta(0), stale_access_token=fresh.access_token)
    assert TokenStore(wh_engine, new_key).get(open_id).refresh_token == newer.refresh_token


def test_a_reconnect_during_a_refresh_wins_over_the_refresh(
    store: TokenStore, wh_engine: Engine, account: str, make_grant: Callable[..., TokenGrant]
) -> None:
    expire_access_token(wh_engine, account)
    refreshed = make_grant(account)
    thread, _, release, results = refresh_in_background(store, account, refreshed)
    reconnected = make_grant(account, scopes=frozenset({"user.info.basic"}))
    store.save_grant(reconnected)  # the owner authorized again while the refresh was in flight
    release.set()
    thread.join(30)
    assert [getattr(r, "access_token", r) for r in results] == [reconnected.access_token]
    stored = store.get(account)
    assert (stored.refresh_token, stored.scopes) == (reconnected.refresh_token, {"user.info.basic"})
    row = raw_row(wh_engine, account)
    assert (row["refresh_lease_owner"], row["refresh_lease_until"]) == (None, None)


def test_a_failed_refresh_hands_the_lease_on_at_once(
    store: TokenStore, wh_engine: Engine, account: str, make_grant: Callable[..., TokenGrant]
) -> None:
    """A non-reauth failure (TikTok down) must not make the next worker wait out the lease."""
    expire_access_token(wh_engine, account)
    with pytest.raises(TimeoutError):
        store.refresh_locked(
            account,
            lambda c: (_ for _ in ()).throw(TimeoutError("token endpoint timed out")),
            min_remaining=timedelta(minutes=5),
            lease=timedelta(hours=1),
        )
    fresh = make_grant(account)
    started = time.monotonic()
    assert store.refresh_locked(account, lambda c: fresh, min_remaining=timedelta(minutes=5)) is not None
    assert time.monotonic() - started < 1.0
