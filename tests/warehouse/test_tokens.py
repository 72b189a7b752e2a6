"""The token store: encryption at rest, clear key errors, reconnects, and refreshes under a row lock."""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text, update
from sqlalchemy.engine import Engine, make_url

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
    TokenStore,
)


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
    keyless = TokenStore(wh_engine, None)
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
