"""
The token store: OAuth tokens of connected accounts, Fernet-encrypted at rest.

The encryption key comes from the ``token_encryption_key`` field of the ``tiktok_default``
connection's extra and is handed in by the caller; it is never in the repository or the database.
Several comma-separated keys are accepted for key rotation: the first encrypts, any of them
decrypts (``cryptography.fernet.MultiFernet``); tokens are re-encrypted with the first key the next
time they are saved or refreshed.

TikTok rotates refresh tokens: once a new one is issued the previous one stops working. So a
refresh happens under a row lock, and the new refresh token is committed in the same transaction
that hands out the new access token (``TokenStore.refresh_locked``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tiktok_warehouse.tables import ACCOUNT_STATUSES, accounts

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sqlalchemy.engine import Connection, Engine, Row

log = logging.getLogger(__name__)

KEY_FIELD = "token_encryption_key"
KEY_CONN_ID = "tiktok_default"
GENERATE_KEY_COMMAND = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
MAX_REASON_LENGTH = 1000
# TikTok tokens look like "act.<...>" and "rft.<...>"; scrubbed from any text we persist.
_TOKEN_PATTERN = re.compile(r"\b(?:act|rft|clt)\.[A-Za-z0-9._~+/=!*%-]{8,}")


class TokenStoreError(Exception):
    """Base class of the token store's own errors."""


class TokenEncryptionKeyMissing(TokenStoreError):
    """No encryption key was configured, so tokens can be neither stored nor read."""

    def __init__(self) -> None:
        super().__init__(
            f"No token encryption key is configured, so OAuth tokens cannot be stored or read. "
            f'Add "{KEY_FIELD}" to the extra of the Airflow connection "{KEY_CONN_ID}", '
            f'e.g. {{"{KEY_FIELD}": "<key>"}}. Generate a key with: {GENERATE_KEY_COMMAND} '
            f"-- keep it secret and keep it: tokens stored with one key cannot be read with another."
        )


class TokenEncryptionKeyInvalid(TokenStoreError):
    """The configured key is not a Fernet key."""

    def __init__(self) -> None:
        super().__init__(
            f'The "{KEY_FIELD}" in the extra of the Airflow connection "{KEY_CONN_ID}" is not a valid '
            f"Fernet key (32 url-safe base64-encoded bytes; several keys may be comma-separated). "
            f"Generate one with: {GENERATE_KEY_COMMAND}"
        )


class TokenDecryptionError(TokenStoreError):
    """The stored tokens of an account cannot be decrypted with the configured key."""


class AccountNotFound(LookupError):
    """No account with this open_id is connected."""

    def __init__(self, open_id: str) -> None:
        super().__init__(f"TikTok account {open_id!r} is not connected (no row in tiktok.accounts).")
        self.open_id = open_id


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
class TokenGrant:
    """What the OAuth token endpoint returned (for a code exchange or a refresh)."""

    open_id: str
    access_token: str = field(repr=False)
    expires_in: int
    refresh_token: str = field(repr=False)
    refresh_expires_in: int
    scopes: frozenset[str]
    obtained_at: datetime


@dataclass(frozen=True)
class AccountTokens:
    """The stored tokens of one account."""

    open_id: str
    access_token: str = field(repr=False)
    access_expires_at: datetime
    refresh_token: str = field(repr=False)
    refresh_expires_at: datetime
    scopes: frozenset[str]
    status: str


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


class TokenStore:
    """
    Store, read and refresh the OAuth tokens of connected accounts.

    :param encryption_key: Fernet key(s), comma-separated for rotation. ``None`` still allows
        ``list_accounts`` and ``set_status``; anything touching a token raises
        ``TokenEncryptionKeyMissing``.
    """

    def __init__(self, engine: Engine, encryption_key: str | None) -> None:
        self.engine = engine
        self._fernet: MultiFernet | None = None
        if encryption_key and encryption_key.strip():
            try:
                keys = [Fernet(k.strip()) for k in encryption_key.split(",") if k.strip()]
            except (ValueError, TypeError):
                raise TokenEncryptionKeyInvalid() from None
            self._fernet = MultiFernet(keys)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(engine={self.engine!r})"

    # -- encryption ---------------------------------------------------------------------------

    def _cipher(self) -> MultiFernet:
        if self._fernet is None:
            raise TokenEncryptionKeyMissing()
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
                f'"{KEY_FIELD}" of the "{KEY_CONN_ID}" connection is not the key it was encrypted '
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
        )

    def _token_values(self, grant: TokenGrant) -> dict[str, Any]:
        obtained_at = _aware(grant.obtained_at, "TokenGrant.obtained_at")
        return {
            "access_token_enc": self._encrypt(grant.open_id, "access", grant.access_token),
            "access_expires_at": obtained_at + timedelta(seconds=grant.expires_in),
            "refresh_token_enc": self._encrypt(grant.open_id, "refresh", grant.refresh_token),
            "refresh_expires_at": obtained_at + timedelta(seconds=grant.refresh_expires_in),
        }

    # -- API ----------------------------------------------------------------------------------

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
        """
        if not grant.open_id or not grant.access_token or not grant.refresh_token:
            raise ValueError("TokenGrant needs an open_id, an access token and a refresh token")
        now = datetime.now(UTC)
        values = {
            "open_id": grant.open_id,
            "display_name": display_name,
            "username": username,
            "avatar_url": avatar_url,
            "status": "active",
            "status_reason": None,
            "scopes": sorted(grant.scopes),
            "connected_at": now,
            "updated_at": now,
            **self._token_values(grant),
        }
        stmt = pg_insert(accounts).values(values)
        excluded = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=[accounts.c.open_id],
            set_={
                "display_name": func.coalesce(excluded.display_name, accounts.c.display_name),
                "username": func.coalesce(excluded.username, accounts.c.username),
                "avatar_url": func.coalesce(excluded.avatar_url, accounts.c.avatar_url),
                "status": excluded.status,
                "status_reason": None,
                "scopes": excluded.scopes,
                "updated_at": excluded.updated_at,
                "access_token_enc": excluded.access_token_enc,
                "access_expires_at": excluded.access_expires_at,
                "refresh_token_enc": excluded.refresh_token_enc,
                "refresh_expires_at": excluded.refresh_expires_at,
            },
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)
        log.info("Saved tokens of TikTok account %s (scopes: %s)", grant.open_id, ",".join(sorted(grant.scopes)))

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
    ) -> AccountTokens:
        """
        Return tokens whose access token stays valid for more than ``min_remaining``, refreshing if needed.

        Runs in one transaction holding ``SELECT ... FOR NO KEY UPDATE`` on the account row, so concurrent
        callers serialise: the first one calls ``refresh`` (the HTTP call), the others then find
        the fresh token and return it without calling ``refresh``. The rotated refresh token is
        committed before the new access token is returned.

        :param refresh: called with the current tokens; returns the token endpoint's new grant.
            If it raises an exception with a truthy ``reauth_required`` attribute, the account is
            marked ``reauth_required`` (committed) and the exception re-raised; any other exception
            rolls back and is re-raised.
        :param stale_access_token: an access token the API just rejected; refresh even if it has
            not expired yet, unless another worker already replaced it.
        """
        self._cipher()
        now = _aware(now, "now") if now is not None else datetime.now(UTC)
        with self.engine.connect() as conn:
            # FOR NO KEY UPDATE: refreshers of this account queue behind each other, while inserts
            # of its videos and snapshots (whose foreign-key checks take KEY SHARE) carry on.
            row = conn.execute(
                select(accounts).where(accounts.c.open_id == open_id).with_for_update(key_share=True)
            ).one_or_none()
            if row is None:
                raise AccountNotFound(open_id)
            current = self._tokens(row)
            still_valid = current.access_expires_at - now > min_remaining
            if still_valid and current.access_token != stale_access_token:
                conn.rollback()
                return current
            if current.status != "active":
                # A refresh token that already failed, or an account switched off: do not hammer
                # the token endpoint once per waiting worker.
                conn.rollback()
                raise AccountNotActive(open_id, current.status, row.status_reason)
            try:
                grant = refresh(current)
            except Exception as exc:
                if getattr(exc, "reauth_required", False):
                    reason = redact(str(exc), current.access_token, current.refresh_token)
                    self._set_status(conn, open_id, "reauth_required", reason[:MAX_REASON_LENGTH])
                    conn.commit()
                    log.warning("TikTok account %s needs to be reconnected: %s", open_id, reason)
                else:
                    conn.rollback()
                raise
            if grant.open_id != open_id:
                conn.rollback()
                raise ValueError(
                    f"The token refresh for TikTok account {open_id!r} returned tokens of another "
                    f"account ({grant.open_id!r}); nothing was stored."
                )
            fresh = self._store_refreshed(conn, current, grant)
            conn.commit()
        log.info("Refreshed the access token of TikTok account %s, valid until %s", open_id, fresh.access_expires_at)
        return fresh

    def _store_refreshed(self, conn: Connection, current: AccountTokens, grant: TokenGrant) -> AccountTokens:
        values = self._token_values(grant)
        refresh_token, refresh_expires_at = grant.refresh_token, values["refresh_expires_at"]
        if not grant.refresh_token:
            # No rotation this time: the stored refresh token stays valid.
            refresh_token, refresh_expires_at = current.refresh_token, current.refresh_expires_at
            values["refresh_token_enc"] = self._encrypt(current.open_id, "refresh", current.refresh_token)
            values["refresh_expires_at"] = refresh_expires_at
        scopes = grant.scopes or current.scopes
        conn.execute(
            update(accounts)
            .where(accounts.c.open_id == current.open_id)
            .values(**values, scopes=sorted(scopes), updated_at=datetime.now(UTC))
        )
        return AccountTokens(
            open_id=current.open_id,
            access_token=grant.access_token,
            access_expires_at=values["access_expires_at"],
            refresh_token=refresh_token,
            refresh_expires_at=refresh_expires_at,
            scopes=frozenset(scopes),
            status=current.status,
        )

    @staticmethod
    def _set_status(conn: Connection, open_id: str, status: str, reason: str | None) -> int:
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
            )
            for row in rows
        ]
