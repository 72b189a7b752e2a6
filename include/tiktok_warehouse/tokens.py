"""
The token store: OAuth tokens of connected accounts, Fernet-encrypted at rest.

Implements the provider's :class:`tiktok_provider.auth.TokenStore` protocol. The encryption key
comes from the ``token_encryption_key`` field of the TikTok app connection's extra and is handed in
by the caller; it is never in the repository or the database.
Several comma-separated keys are accepted for key rotation: the first encrypts, any of them
decrypts (``cryptography.fernet.MultiFernet``); tokens are re-encrypted with the first key the next
time they are saved or refreshed.

TikTok rotates refresh tokens: once a new one is issued the previous one stops working. So only
one worker refreshes an account at a time, and the new refresh token is stored before the new
access token is handed out (``TokenStore.refresh_locked``). That worker holds a *lease* on the
account row (``refresh_lease_owner``/``refresh_lease_until``, set in a short committed
transaction), not a row lock: no database session stays open across the HTTP call, so a session
killed meanwhile (idle timeout, failover, a pooler) cannot take the rotated token with it. The
new grant is kept in memory only, never logged, while it is written (with retries on transient
database errors). Whoever does not hold the lease waits until the holder stores the new token or
the lease runs out (a holder that died blocks the others for at most the lease).

A single-use credential (an authorization code, a refresh token about to be rotated) is only
spent once ``TokenStore.check_ready`` has shown that what it buys can be stored.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Interval, case, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from tiktok_provider.auth import AccountTokens, TokenGrant
from tiktok_provider.errors import AccountNotFound as _AccountNotFound
from tiktok_provider.errors import TokenStoreError as _TokenStoreError
from tiktok_warehouse.db import LOCK_TIMEOUT, STATEMENT_TIMEOUT, sqlstate_of
from tiktok_warehouse.tables import ACCOUNT_STATUSES, accounts

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sqlalchemy.engine import Engine, Row
    from sqlalchemy.sql.dml import Insert

log = logging.getLogger(__name__)
T = TypeVar("T")

KEY_FIELD = "token_encryption_key"
GENERATE_KEY_COMMAND = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
MAX_REASON_LENGTH = 1000
#: How long a refresh lease lasts unless the caller says otherwise (the hook derives it from its
#: timeouts): the longest a worker that died mid-refresh keeps the others waiting.
DEFAULT_LEASE = timedelta(minutes=2)
#: How often a worker waiting for another one's refresh looks at the account row again.
POLL_INTERVAL_SECONDS = 0.2
#: How long a grant TikTok already issued is kept in memory while the database is unreachable.
STORE_RETRY_SECONDS = 120.0
STORE_ATTEMPTS = 20
#: How long such a grant waits for a lock on its account row (lock/statement timeouts retried):
#: the database answers, so only giving up loses the grant; still well within a task's execution_timeout.
STORE_LOCK_WAIT_SECONDS = 900.0
#: Postgres cancelled the statement at a bound (``lock_timeout``, ``statement_timeout``): busy, not gone.
_BUSY_SQLSTATES = frozenset({LOCK_TIMEOUT, STATEMENT_TIMEOUT})
#: A refresh token lifetime TikTok did not state is taken as the shorter of the documented ones
#: (365 days on older pages, 180 on newer), unless the previous token's expiry is known.
ASSUMED_REFRESH_LIFETIME = timedelta(days=180)
#: SQLSTATEs that say the warehouse is reachable but not ready for tokens, with what to do.
_NOT_READY_ADVICE = {
    "42P01": "the table tiktok.accounts does not exist: migrate the warehouse (make migrate, or python -m "
    "tiktok_warehouse.migrate)",
    "3F000": "the schema tiktok does not exist: migrate the warehouse (make migrate, or python -m "
    "tiktok_warehouse.migrate)",
    "42703": "tiktok.accounts lacks columns this version needs: migrate the warehouse (make migrate, or "
    "python -m tiktok_warehouse.migrate)",
    "42501": "the warehouse login may not write tiktok.accounts: grant it DML on schema tiktok (python -m "
    "tiktok_ops.dag_role)",
    "25006": "the tiktok_warehouse connection points at a read-only database (a replica?): point it at the primary",
}
# TikTok tokens look like "act.<...>" and "rft.<...>"; scrubbed from any text we persist.
_TOKEN_PATTERN = re.compile(r"\b(?:act|rft|clt)\.[A-Za-z0-9._~+/=!*%-]{8,}")


def _connection(conn_id: str | None) -> str:
    """How a message names the TikTok app's Airflow connection (the caller knows its id; we may not)."""
    return f'the Airflow connection "{conn_id}"' if conn_id else "the TikTok app's Airflow connection"


class TokenStoreError(_TokenStoreError):
    """Base class of the token store's own errors (the provider's base: its hook and operators catch it)."""


class TokenEncryptionKeyMissing(TokenStoreError):
    """No encryption key was configured, so tokens can be neither stored nor read."""

    def __init__(self, conn_id: str | None = None) -> None:
        super().__init__(
            f"No token encryption key is configured, so OAuth tokens cannot be stored or read. "
            f'Add "{KEY_FIELD}" to the extra of {_connection(conn_id)}, '
            f'e.g. {{"{KEY_FIELD}": "<key>"}}. Generate a key with: {GENERATE_KEY_COMMAND} '
            f"-- keep it secret and keep it: tokens stored with one key cannot be read with another."
        )


class TokenEncryptionKeyInvalid(TokenStoreError):
    """The configured key is not a Fernet key."""

    def __init__(self, conn_id: str | None = None) -> None:
        super().__init__(
            f'The "{KEY_FIELD}" in the extra of {_connection(conn_id)} is not a valid '
            f"Fernet key (32 url-safe base64-encoded bytes; several keys may be comma-separated). "
            f"Generate one with: {GENERATE_KEY_COMMAND}"
        )


class TokenDecryptionError(TokenStoreError):
    """The stored tokens of an account cannot be decrypted with the configured key."""


class TokenStoreUnavailable(TokenStoreError):
    """The warehouse could not be reached to check that tokens can be stored; nothing was spent."""

    retryable = True


class TokenStoreNotReady(TokenStoreError):
    """The warehouse answers but cannot store tokens (not migrated, no write permission, read-only)."""


class TokenGrantLost(TokenStoreError):
    """TikTok issued tokens, but the warehouse could not store them: the account must be reconnected."""


class TokenRefreshTimeout(TimeoutError):
    """Waited too long for other workers' refresh of an account; nothing was spent.

    Not a :class:`TokenStoreError` on purpose: it is transient, and callers fail fast on those.
    """


class AccountNotFound(_AccountNotFound):
    """No account with this open_id is connected (no row in tiktok.accounts)."""


class AccountNotActive(TokenStoreError):
    """The account's tokens need refreshing, but its status forbids trying."""

    def __init__(self, open_id: str, status: str, reason: str | None) -> None:
        self.open_id = open_id
        self.status = status
        # Same protocol as the refresh callable's errors: callers may check this one attribute.
        self.reauth_required = status == "reauth_required"
        action = (
            "The account owner must reconnect it (authorize the app again)."
            if self.reauth_required
            else "Set its status back to 'active' to sync it again."
        )
        super().__init__(
            f"TikTok account {open_id!r} has status {status!r}"
            f"{f' ({reason})' if reason else ''}; its tokens are not refreshed. {action}"
        )


@dataclass(frozen=True)
class Account:
    """A connected account, without its tokens."""

    open_id: str
    display_name: str | None
    username: str | None
    status: str
    status_reason: str | None
    scopes: frozenset[str]
    connected_at: datetime
    updated_at: datetime
    access_expires_at: datetime
    refresh_expires_at: datetime
    #: TikTok did not state the refresh token's lifetime: ``refresh_expires_at`` is our estimate.
    refresh_expiry_estimated: bool = False


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (got naive {value.isoformat()})")
    return value.astimezone(UTC)


def _check_status(status: str) -> None:
    if status not in ACCOUNT_STATUSES:
        raise ValueError(f"Unknown account status {status!r}; expected one of {', '.join(ACCOUNT_STATUSES)}")


def redact(text: str, *secrets: str) -> str:
    """Return ``text`` with the given secrets and anything shaped like a TikTok token removed."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _TOKEN_PATTERN.sub("[redacted]", text)


def looks_like_token(text: str) -> bool:
    """Whether ``text`` holds something shaped like a TikTok token (``act.``, ``rft.``, ``clt.`` and 8+ characters)."""
    return _TOKEN_PATTERN.search(text) is not None


#: SQLSTATEs a grant held only in memory is worth waiting out: ``25006`` is what a failover (or a
#: pooler or DNS name still pointing at the old primary, now a standby) answers writes for a while.
_WAIT_OUT_SQLSTATES = frozenset({"25006"})


def _is_transient(exc: DBAPIError) -> bool:
    """Whether a database error may go away on its own (a lost connection, a server restarting)."""
    return isinstance(exc, (OperationalError, InterfaceError)) or bool(exc.connection_invalidated)


def _describe(exc: BaseException) -> str:
    """The driver's first line of an error: no SQL, no bound parameters (they hold ciphertexts)."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}"[:300]


def _sqlstate(exc: DBAPIError) -> str | None:
    return sqlstate_of(exc.orig)


class TokenStore:
    """
    Store, read and refresh the OAuth tokens of connected accounts.

    :param encryption_key: Fernet key(s), comma-separated for rotation. ``None`` still allows
        ``list_accounts`` and ``set_status``; anything touching a token raises
        ``TokenEncryptionKeyMissing``.
    :param sleep: how to wait between attempts to store a grant and between looks at a lease
        held by another worker (tests pass a recorder).
    :param store_retry_seconds: how long a grant TikTok already issued is retried against an
        unreachable database before it is given up (``TokenGrantLost``).
    :param key_conn_id: the Airflow connection that holds the encryption key, named in messages.
    :param store_lock_wait_seconds: how long such a grant is retried while its account row stays
        locked by another session (each attempt ends at the engine's ``lock_timeout``).
    """

    def __init__(
        self,
        engine: Engine,
        encryption_key: str | None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        store_retry_seconds: float = STORE_RETRY_SECONDS,
        poll_interval: float = POLL_INTERVAL_SECONDS,
        key_conn_id: str | None = None,
        store_lock_wait_seconds: float = STORE_LOCK_WAIT_SECONDS,
    ) -> None:
        self.engine = engine
        self.key_conn_id = key_conn_id
        self._sleep = sleep
        self.store_retry_seconds = store_retry_seconds
        self.store_lock_wait_seconds = store_lock_wait_seconds
        self.poll_interval = poll_interval
        self._fernet: MultiFernet | None = None
        if encryption_key and encryption_key.strip():
            try:
                keys = [Fernet(k.strip()) for k in encryption_key.split(",") if k.strip()]
            except (ValueError, TypeError):
                raise TokenEncryptionKeyInvalid(key_conn_id) from None
            self._fernet = MultiFernet(keys)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(engine={self.engine!r})"

    # -- encryption ---------------------------------------------------------------------------

    def _cipher(self) -> MultiFernet:
        if self._fernet is None:
            raise TokenEncryptionKeyMissing(self.key_conn_id)
        return self._fernet

    def _encrypt(self, open_id: str, kind: str, token: str) -> bytes:
        # The plaintext names its account and kind, so ciphertexts cannot be swapped between rows.
        payload = json.dumps({"open_id": open_id, "kind": kind, "token": token})
        return self._cipher().encrypt(payload.encode())

    def _decrypt(self, open_id: str, kind: str, ciphertext: bytes | memoryview) -> str:
        cipher = self._cipher()
        try:
            payload: dict[str, Any] = json.loads(cipher.decrypt(bytes(ciphertext)))
        except InvalidToken:
            raise TokenDecryptionError(
                f"Cannot decrypt the stored {kind} token of TikTok account {open_id!r}: the "
                f'"{KEY_FIELD}" of {_connection(self.key_conn_id)} is not the key it was encrypted '
                f"with. Restore the previous key (or list it after the new one, comma-separated, "
                f"to rotate keys), or have the account reconnected."
            ) from None
        if payload.get("open_id") != open_id or payload.get("kind") != kind:
            raise TokenDecryptionError(
                f"The stored {kind} token of TikTok account {open_id!r} was encrypted for another "
                f"account or token kind; the row was tampered with. Have the account reconnected."
            )
        return str(payload["token"])

    def _tokens(self, row: Row[Any]) -> AccountTokens:
        return AccountTokens(
            open_id=row.open_id,
            access_token=self._decrypt(row.open_id, "access", row.access_token_enc),
            access_expires_at=row.access_expires_at.astimezone(UTC),
            refresh_token=self._decrypt(row.open_id, "refresh", row.refresh_token_enc),
            refresh_expires_at=row.refresh_expires_at.astimezone(UTC),
            scopes=frozenset(row.scopes or ()),
            status=row.status,
            refresh_expiry_estimated=row.refresh_expiry_estimated,
        )

    def _token_values(self, grant: TokenGrant, previous: AccountTokens | None = None) -> dict[str, Any]:
        obtained_at = _aware(grant.obtained_at, "TokenGrant.obtained_at")
        # An answer without an access token (or without its lifetime) is stored as expired now:
        # the refresh token it brought is what matters, and the next use refreshes.
        expires_in = grant.expires_in if grant.access_token else 0
        # Only a lifetime TikTok states for this very token is known; anything else is an estimate,
        # which warns but never condemns the account (only TikTok refusing the token does).
        estimated = grant.refresh_expires_in is None
        if not estimated:
            refresh_expires_at = obtained_at + timedelta(seconds=grant.refresh_expires_in)
        elif previous is not None and previous.refresh_expires_at > obtained_at:
            # A rotation is assumed not to shorten the token's life; it may lengthen it unseen.
            refresh_expires_at = previous.refresh_expires_at
        else:
            refresh_expires_at = obtained_at + ASSUMED_REFRESH_LIFETIME
        return {
            "access_token_enc": self._encrypt(grant.open_id, "access", grant.access_token),
            "access_expires_at": obtained_at + timedelta(seconds=max(0, expires_in)),
            "refresh_token_enc": self._encrypt(grant.open_id, "refresh", grant.refresh_token),
            "refresh_expires_at": refresh_expires_at,
            "refresh_expiry_estimated": estimated,
        }

    # -- writing a grant that exists only in memory -------------------------------------------

    def _write_with_retries(self, grant: TokenGrant, write: Callable[[], T], *, lost: str) -> T:
        """Run ``write`` until it succeeds, retrying transient database errors for a while.

        The grant exists only in this process's memory meanwhile; it is never logged. When the
        database stays away, or refuses for good, :class:`TokenGrantLost` says what was lost. A
        statement Postgres cancelled at a bound (lock or statement timeout) is retried for up to
        ``store_lock_wait_seconds``: the database answers, another session holds the account row
        (an admin's open transaction, a migration), and waiting is all that saves the grant.
        """
        started = time.monotonic()
        deadline = started + self.store_retry_seconds
        lock_deadline = started + max(self.store_retry_seconds, self.store_lock_wait_seconds)
        delay = 0.25
        attempt = failures = 0
        while True:
            attempt += 1
            try:
                return write()
            except DBAPIError as exc:
                last = _describe(exc)
                waiting = _sqlstate(exc) in _BUSY_SQLSTATES
                failures += 0 if waiting else 1
                # A grant TikTok already issued is lost if we stop: wait out a read-only spell too (a
                # failover), not only a lost connection. (check_ready refuses a read-only warehouse at once.)
                retryable = waiting or _is_transient(exc) or _sqlstate(exc) in _WAIT_OUT_SQLSTATES
                give_up = lock_deadline if waiting else deadline
                if not retryable or failures >= STORE_ATTEMPTS or time.monotonic() + delay > give_up:
                    break
                log.warning(
                    "Could not store the new tokens of TikTok account %s (attempt %d: %s); retrying in %.2fs. "
                    "They are held in memory only until then.",
                    grant.open_id,
                    attempt,
                    last,
                    delay,
                )
                self._sleep(delay)
                delay = min(delay * 2, 10.0)
        log.error(
            "Gave up storing the new tokens of TikTok account %s after %d attempts: %s", grant.open_id, attempt, last
        )
        raise TokenGrantLost(
            f"TikTok issued new tokens for account {grant.open_id!r} [log_id={grant.log_id or 'none'}], but the "
            f"warehouse could not store them ({attempt} attempts over {time.monotonic() - started:.0f}s; last "
            f"error {last}). {lost} Check the tiktok_warehouse connection and Postgres first."
        )

    # -- API ----------------------------------------------------------------------------------

    def _upsert(
        self,
        grant: TokenGrant,
        *,
        display_name: str | None = None,
        username: str | None = None,
        avatar_url: str | None = None,
    ) -> Insert:
        if not grant.open_id or not grant.refresh_token:
            raise ValueError("TokenGrant needs an open_id and a refresh token")
        now = datetime.now(UTC)
        values = {
            "open_id": grant.open_id,
            "display_name": display_name,
            "username": username,
            "avatar_url": avatar_url,
            "status": "active",
            "status_reason": None,
            "scopes": sorted(grant.scopes or ()),
            "connected_at": now,
            "updated_at": now,
            "refresh_lease_owner": None,
            "refresh_lease_until": None,
            # A grant from a code or a refresh token proves the creator's authorization stands now:
            # a deauthorization TikTok sent before it (a webhook redelivered late) is stale, and the
            # retention clock of an earlier disconnect stops (whichever way it was reconnected).
            "authorized_at": _aware(grant.obtained_at, "TokenGrant.obtained_at"),
            "disconnected_at": None,
            **self._token_values(grant),
        }
        stmt = pg_insert(accounts).values(values)
        excluded = stmt.excluded
        return stmt.on_conflict_do_update(
            index_elements=[accounts.c.open_id],
            set_={
                "display_name": func.coalesce(excluded.display_name, accounts.c.display_name),
                "username": func.coalesce(excluded.username, accounts.c.username),
                "avatar_url": func.coalesce(excluded.avatar_url, accounts.c.avatar_url),
                "status": excluded.status,
                "status_reason": None,
                # Scopes TikTok did not state: keep the ones we know.
                "scopes": excluded.scopes if grant.scopes is not None else accounts.c.scopes,
                "updated_at": excluded.updated_at,
                "access_token_enc": excluded.access_token_enc,
                "access_expires_at": excluded.access_expires_at,
                "refresh_token_enc": excluded.refresh_token_enc,
                "refresh_expires_at": excluded.refresh_expires_at,
                "refresh_expiry_estimated": excluded.refresh_expiry_estimated,
                "authorized_at": excluded.authorized_at,
                "disconnected_at": None,
                # A refresh still in flight with the replaced tokens finds them changed and stores nothing.
                "refresh_lease_owner": None,
                "refresh_lease_until": None,
            },
        )

    def check_ready(self) -> None:
        """
        Check that ``save_grant`` can store tokens, before a single-use credential is spent on them.

        The key must encrypt and decrypt, the warehouse must be reachable, migrated, writable by
        this login, and not read-only: a probe account is inserted and updated, then rolled back.

        :raises TokenEncryptionKeyMissing: no key (``TokenEncryptionKeyInvalid`` is raised earlier,
            when the store is built).
        :raises TokenStoreUnavailable: the warehouse cannot be reached now (retryable).
        :raises TokenStoreNotReady: the warehouse cannot store tokens until someone fixes it.
        """
        probe_id = f"__tiktok_preflight_{uuid.uuid4().hex}"
        secret = uuid.uuid4().hex
        if self._decrypt(probe_id, "probe", self._encrypt(probe_id, "probe", secret)) != secret:
            raise TokenEncryptionKeyInvalid(self.key_conn_id)  # pragma: no cover - Fernet round trips or raises
        probe = TokenGrant(
            open_id=probe_id,
            access_token=f"probe-{secret}",
            expires_in=60,
            refresh_token=f"probe-{secret}",
            refresh_expires_in=60,
            scopes=frozenset(),
            obtained_at=datetime.now(UTC),
        )
        try:
            with self.engine.connect() as conn:
                transaction = conn.begin()
                try:
                    conn.execute(select(*accounts.c).limit(0))  # every column this version reads and writes
                    conn.execute(self._upsert(probe))
                    conn.execute(self._upsert(probe, display_name="probe"))  # the reconnect path: ON CONFLICT UPDATE
                finally:
                    transaction.rollback()
        except DBAPIError as exc:
            if _is_transient(exc) and _sqlstate(exc) not in _NOT_READY_ADVICE:
                raise TokenStoreUnavailable(
                    f"The warehouse (tiktok_warehouse connection) cannot be reached to store tokens: {_describe(exc)}. "
                    "Nothing was sent to TikTok; the task is retried."
                ) from None
            advice = _NOT_READY_ADVICE.get(_sqlstate(exc) or "", "see the error")
            raise TokenStoreNotReady(
                f"The warehouse cannot store tokens: {advice} ({_describe(exc)}). Nothing was sent to TikTok."
            ) from None

    def save_grant(
        self,
        grant: TokenGrant,
        *,
        display_name: str | None = None,
        username: str | None = None,
        avatar_url: str | None = None,
    ) -> None:
        """
        Connect or reconnect an account: store both tokens and make the account active.

        On reconnect the tokens, expiries and scopes are replaced, the status reason is cleared,
        ``connected_at`` is kept, and profile fields passed as None keep their stored values.
        Transient database errors are retried for ``store_retry_seconds``; then
        :class:`TokenGrantLost` is raised.
        """
        stmt = self._upsert(grant, display_name=display_name, username=username, avatar_url=avatar_url)

        def write() -> None:
            with self.engine.begin() as conn:
                conn.execute(stmt)

        self._write_with_retries(
            grant,
            write,
            lost="The credential that bought them is spent: have the account's owner authorize the app again and "
            "trigger the tiktok_connect_account DAG with the new auth_code.",
        )
        scopes = ",".join(sorted(grant.scopes)) if grant.scopes is not None else "unknown, kept"
        log.info("Saved tokens of TikTok account %s (scopes: %s)", grant.open_id, scopes)

    def get(self, open_id: str) -> AccountTokens:
        """Return the stored tokens of an account."""
        self._cipher()
        with self.engine.connect() as conn:
            row = conn.execute(select(accounts).where(accounts.c.open_id == open_id)).one_or_none()
        if row is None:
            raise AccountNotFound(open_id)
        return self._tokens(row)

    def refresh_locked(
        self,
        open_id: str,
        refresh: Callable[[AccountTokens], TokenGrant],
        *,
        min_remaining: timedelta,
        stale_access_token: str | None = None,
        now: datetime | None = None,
        lease: timedelta = DEFAULT_LEASE,
        max_wait: timedelta | None = None,
    ) -> AccountTokens:
        """
        Return tokens whose access token stays valid for more than ``min_remaining``, refreshing if needed.

        One caller per account at a time refreshes: it takes the account's lease (a short committed
        transaction), calls ``refresh`` (the HTTP call) outside any transaction, and stores the
        grant, retrying transient database errors, before returning it. The others poll the row
        until the holder stores the new token (and return it without calling ``refresh``) or the
        lease runs out (then one of them takes it over).

        :param refresh: called with the current tokens; returns the token endpoint's new grant.
            If it raises an exception with a truthy ``reauth_required`` attribute, the account is
            marked ``reauth_required`` (committed) and the exception re-raised -- unless the tokens
            were replaced meanwhile (then those are returned). When we took the lease over from a
            holder whose lease ran out, that holder may still be reading TikTok's answer (the one
            that rotated the token we just presented): we wait one more lease for it to store the
            new token before condemning the account. Any other exception releases the lease and is
            re-raised.
        :param stale_access_token: an access token the API just rejected; refresh even if it has
            not expired yet, unless another worker already replaced it.
        :param lease: how long others wait for this refresh before taking over; ``refresh`` must
            finish well within it.
        :param max_wait: give up waiting for others after this long (``TokenRefreshTimeout``);
            default three leases.
        :raises TokenGrantLost: TikTok rotated the tokens but they could not be stored.
        """
        self._cipher()
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        give_up = time.monotonic() + (max_wait or lease * 3).total_seconds()
        for _round in range(3):
            current, refresh_enc, took_over = self._claim(
                open_id, owner, min_remaining, stale_access_token, now, lease, give_up
            )
            if refresh_enc is None:
                return current
            try:
                grant = refresh(current)
            except Exception as exc:
                if not getattr(exc, "reauth_required", False):
                    self._release(open_id, owner)
                    raise
                if took_over and self._replaced_within(open_id, refresh_enc, lease):
                    log.info(
                        "TikTok refused the refresh token of account %s, but the worker whose lease ran out stored "
                        "the token TikTok had rotated meanwhile; using that",
                        open_id,
                    )
                    self._release(open_id, owner)
                    continue
                reason = redact(str(exc), current.access_token, current.refresh_token)[:MAX_REASON_LENGTH]
                if self._mark_reauth(open_id, owner, refresh_enc, reason):
                    log.warning("TikTok account %s needs to be reconnected: %s", open_id, reason)
                    raise
                # The tokens changed while TikTok said no (a reconnect, or an overdue lease holder
                # that stored after all): look again instead of condemning the account.
                log.info("Refresh of TikTok account %s was refused, but its tokens were replaced meanwhile", open_id)
                continue
            if grant.open_id != open_id:
                self._release(open_id, owner)
                raise ValueError(
                    f"The token refresh for TikTok account {open_id!r} returned tokens of another "
                    f"account ({grant.open_id!r}); nothing was stored."
                )
            return self._store_refreshed(current, refresh_enc, grant, owner)
        raise AccountNotActive(open_id, "reauth_required", "refused by TikTok while its tokens kept changing")

    def _claim(
        self,
        open_id: str,
        owner: str,
        min_remaining: timedelta,
        stale_access_token: str | None,
        now: datetime | None,
        lease: timedelta,
        give_up: float,
    ) -> tuple[AccountTokens, bytes | None, bool]:
        """Return ``(tokens, None, False)`` when they are good, or ``(tokens, refresh_token_enc, took_over)``
        once we hold the lease (``took_over``: another worker's lease had run out, not been released)."""
        while True:
            with self.engine.begin() as conn:
                # FOR NO KEY UPDATE, for the few milliseconds of this transaction only: refreshers
                # decide one at a time, while inserts of the account's videos and snapshots (whose
                # foreign-key checks take KEY SHARE) carry on.
                row = conn.execute(
                    select(accounts, func.now().label("db_now"))
                    .where(accounts.c.open_id == open_id)
                    .with_for_update(key_share=True, of=accounts)
                ).one_or_none()
                if row is None:
                    raise AccountNotFound(open_id)
                current = self._tokens(row)
                at = _aware(now, "now") if now is not None else datetime.now(UTC)
                if current.access_expires_at - at > min_remaining and current.access_token != stale_access_token:
                    return current, None, False
                if current.status != "active":
                    # A refresh token that already failed, or an account switched off: do not hammer
                    # the token endpoint once per waiting worker.
                    raise AccountNotActive(open_id, current.status, row.status_reason)
                held = row.refresh_lease_until is not None and row.refresh_lease_until > row.db_now
                if not held:
                    if row.refresh_lease_until is not None:
                        log.warning(
                            "Taking over the token refresh of TikTok account %s: the lease of %s ran out at %s",
                            open_id,
                            row.refresh_lease_owner,
                            row.refresh_lease_until,
                        )
                    conn.execute(
                        update(accounts)
                        .where(accounts.c.open_id == open_id)
                        .values(refresh_lease_owner=owner, refresh_lease_until=func.now() + literal(lease, Interval()))
                    )
                    return current, bytes(row.refresh_token_enc), row.refresh_lease_until is not None
                holder = row.refresh_lease_owner
            if time.monotonic() > give_up:
                raise TokenRefreshTimeout(
                    f"Waited too long for another worker ({holder}) to refresh the tokens of TikTok account "
                    f"{open_id!r}; nothing was sent to TikTok. The task is retried."
                )
            self._sleep(self.poll_interval)

    def _replaced_within(self, open_id: str, refresh_enc: bytes, lease: timedelta) -> bool:
        """Wait up to ``lease`` for the account's refresh token to change from ``refresh_enc``; return whether it did.

        A worker whose lease ran out may still be reading a slow answer, which ends (by its cutoff)
        within one more lease of ours; until then TikTok's invalid_grant may only mean it rotated.
        """
        log.warning(
            "TikTok refused the refresh token of account %s right after this worker took over an expired lease: "
            "waiting up to %.0fs for the previous holder to store the token TikTok may have rotated for it",
            open_id,
            lease.total_seconds(),
        )
        until = time.monotonic() + lease.total_seconds()
        while True:
            try:
                with self.engine.connect() as conn:
                    stored = conn.execute(
                        select(accounts.c.refresh_token_enc).where(accounts.c.open_id == open_id)
                    ).scalar_one_or_none()
            except DBAPIError as exc:
                log.warning("Could not look at TikTok account %s (%s); looking again", open_id, _describe(exc))
                stored = refresh_enc
            if stored is None or bytes(stored) != refresh_enc:
                return True
            if time.monotonic() >= until:
                return False
            self._sleep(self.poll_interval)

    def _lease_cleared(self, owner: str) -> dict[str, Any]:
        """Column values that end our lease, and leave anyone else's alone."""
        ours = accounts.c.refresh_lease_owner == owner
        return {
            "refresh_lease_owner": case((ours, None), else_=accounts.c.refresh_lease_owner),
            "refresh_lease_until": case((ours, None), else_=accounts.c.refresh_lease_until),
        }

    def _release(self, open_id: str, owner: str) -> None:
        """End our lease early (best effort: if this fails, the lease simply runs out)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(accounts)
                    .where(accounts.c.open_id == open_id, accounts.c.refresh_lease_owner == owner)
                    .values(refresh_lease_owner=None, refresh_lease_until=None)
                )
        except DBAPIError as exc:
            log.warning(
                "Could not release the refresh lease of TikTok account %s (%s); it runs out", open_id, _describe(exc)
            )

    def _mark_reauth(self, open_id: str, owner: str, refresh_enc: bytes, reason: str) -> bool:
        """Mark the account ``reauth_required`` unless its tokens changed since we read them; return whether."""
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    update(accounts)
                    .where(
                        accounts.c.open_id == open_id,
                        accounts.c.refresh_token_enc == refresh_enc,
                        accounts.c.status == "active",
                    )
                    .values(
                        status="reauth_required",
                        status_reason=reason,
                        updated_at=datetime.now(UTC),
                        **self._lease_cleared(owner),
                    ),
                    execution_options={"preserve_rowcount": True},
                )
                marked = result.rowcount > 0
        except DBAPIError as exc:
            log.warning("Could not mark TikTok account %s reauth_required (%s)", open_id, _describe(exc))
            return True  # the caller re-raises TikTok's refusal; the next refresher marks it
        if not marked:
            self._release(open_id, owner)
        return marked

    def _store_refreshed(
        self, current: AccountTokens, refresh_enc: bytes, grant: TokenGrant, owner: str
    ) -> AccountTokens:
        """Store a refresh's grant over the tokens it was bought with, retrying transient errors."""
        values = self._token_values(grant, previous=current)
        scopes = grant.scopes or current.scopes
        reauth = accounts.c.status == "reauth_required"
        stmt = (
            update(accounts)
            .where(accounts.c.open_id == current.open_id, accounts.c.refresh_token_enc == refresh_enc)
            .values(
                **values,
                scopes=sorted(scopes),
                updated_at=datetime.now(UTC),
                # Fresh tokens prove the authorization stands: undo a reauth_required that a worker
                # which took over an overdue lease set when TikTok refused the token we had rotated.
                status=case((reauth, "active"), else_=accounts.c.status),
                status_reason=case((reauth, None), else_=accounts.c.status_reason),
                **self._lease_cleared(owner),
            )
        )

        def write() -> int:
            with self.engine.begin() as conn:
                return conn.execute(stmt, execution_options={"preserve_rowcount": True}).rowcount

        stored = self._write_with_retries(
            grant,
            write,
            lost="TikTok has rotated the refresh token, so the stored one no longer works: have the account's owner "
            "authorize the app again and trigger the tiktok_connect_account DAG with the new auth_code.",
        )
        if not stored:
            # Replaced meanwhile (a reconnect, or our own commit whose answer was lost): keep those.
            log.warning(
                "The tokens of TikTok account %s were replaced while it was being refreshed; keeping the stored ones",
                current.open_id,
            )
            self._release(current.open_id, owner)
            return self.get(current.open_id)
        fresh = AccountTokens(
            open_id=current.open_id,
            access_token=grant.access_token,
            access_expires_at=values["access_expires_at"],
            refresh_token=grant.refresh_token,
            refresh_expires_at=values["refresh_expires_at"],
            scopes=frozenset(scopes),
            status="active" if current.status == "reauth_required" else current.status,
            refresh_expiry_estimated=values["refresh_expiry_estimated"],
        )
        log.info(
            "Refreshed the access token of TikTok account %s, valid until %s", current.open_id, fresh.access_expires_at
        )
        return fresh

    @staticmethod
    def _set_status(conn: Any, open_id: str, status: str, reason: str | None) -> int:
        result = conn.execute(
            update(accounts)
            .where(accounts.c.open_id == open_id)
            .values(status=status, status_reason=reason, updated_at=datetime.now(UTC)),
            execution_options={"preserve_rowcount": True},
        )
        return result.rowcount

    def set_status(self, open_id: str, status: str, reason: str | None = None) -> None:
        """Set an account's status (``active``, ``reauth_required`` or ``disabled``) and why."""
        _check_status(status)
        if reason is not None:
            reason = redact(reason)[:MAX_REASON_LENGTH]
        with self.engine.begin() as conn:
            if not self._set_status(conn, open_id, status, reason):
                raise AccountNotFound(open_id)

    def list_accounts(
        self,
        *,
        statuses: Sequence[str] = ("active",),
        open_ids: Sequence[str] | None = None,
    ) -> list[Account]:
        """Return the accounts with one of ``statuses`` (and among ``open_ids`` if given), by open_id."""
        for status in statuses:
            _check_status(status)
        query = select(
            accounts.c.open_id,
            accounts.c.display_name,
            accounts.c.username,
            accounts.c.status,
            accounts.c.status_reason,
            accounts.c.scopes,
            accounts.c.connected_at,
            accounts.c.updated_at,
            accounts.c.access_expires_at,
            accounts.c.refresh_expires_at,
            accounts.c.refresh_expiry_estimated,
        ).where(accounts.c.status.in_(list(statuses)))
        if open_ids is not None:
            query = query.where(accounts.c.open_id.in_(list(open_ids)))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(accounts.c.open_id)).all()
        return [
            Account(
                open_id=row.open_id,
                display_name=row.display_name,
                username=row.username,
                status=row.status,
                status_reason=row.status_reason,
                scopes=frozenset(row.scopes or ()),
                connected_at=row.connected_at.astimezone(UTC),
                updated_at=row.updated_at.astimezone(UTC),
                access_expires_at=row.access_expires_at.astimezone(UTC),
                refresh_expires_at=row.refresh_expires_at.astimezone(UTC),
                refresh_expiry_estimated=row.refresh_expiry_estimated,
            )
            for row in rows
        ]
