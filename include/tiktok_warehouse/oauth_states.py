"""
Pending authorizations: the OAuth ``state`` of connect attempts started in the accounts UI.

A connect attempt stores a row keyed by the SHA-256 of its random ``state`` (the state itself is
never stored), bound to the browser that started it (the SHA-256 of a random cookie) and to the
Airflow user, with the PKCE ``code_verifier`` Fernet-encrypted with the token encryption key.
When TikTok sends the browser back, :meth:`PendingAuthorizations.finish` takes the row exactly
once: an unknown state (tampered), a used one (replayed), an expired one, or one started by another
browser or user raises :class:`StateRejected` and nothing else happens. Decrypting the verifier
there is also the proof that the encryption key still works before the single-use code is spent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tiktok_warehouse.tables import oauth_states
from tiktok_warehouse.tokens import TokenDecryptionError, TokenEncryptionKeyInvalid, TokenEncryptionKeyMissing

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Engine

#: How long a user has on TikTok's consent page.
STATE_TTL = timedelta(minutes=15)
#: Finished and expired attempts are deleted this long after they expire.
KEEP_EXPIRED = timedelta(days=1)


def digest(value: str) -> str:
    """SHA-256 hex of a secret we must recognise but never store (a state, a binding cookie)."""
    return hashlib.sha256(value.encode()).hexdigest()


class StateRejected(Exception):
    """The callback's state cannot finish a connect attempt; ``reason`` says why."""

    MESSAGES = {
        "missing": "The answer from TikTok carries no state, so it cannot be matched to a connect attempt.",
        "unknown": (
            "The state in the answer from TikTok matches no connect attempt: it was altered, or the "
            "attempt was started on another Airflow installation."
        ),
        "used": (
            "This answer from TikTok was already used to finish its connect attempt (a reload, the back "
            "button, or a replay); it cannot be used twice."
        ),
        "expired": "The connect attempt expired before TikTok sent you back.",
        "other_session": (
            "The connect attempt was started in another browser or by another Airflow user; only the "
            "browser that started it can finish it."
        ),
    }

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(self.MESSAGES[reason])


@dataclass(frozen=True)
class PendingAuthorization:
    """What the callback needs of the attempt it finishes."""

    code_verifier: str = field(repr=False)
    redirect_uri: str
    scopes: tuple[str, ...]
    expected_open_id: str | None
    user_id: str


def _cipher(encryption_key: str | None) -> MultiFernet:
    if not encryption_key or not encryption_key.strip():
        raise TokenEncryptionKeyMissing()
    try:
        return MultiFernet([Fernet(k.strip()) for k in encryption_key.split(",") if k.strip()])
    except (ValueError, TypeError):
        raise TokenEncryptionKeyInvalid() from None


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (got naive {value.isoformat()})")
    return value.astimezone(UTC)


class PendingAuthorizations:
    """
    Start and finish connect attempts.

    :param encryption_key: the token encryption key (comma-separated for rotation), as in the token store.
    """

    def __init__(self, engine: Engine, encryption_key: str | None) -> None:
        self.engine = engine
        self._key = encryption_key

    def __repr__(self) -> str:
        return f"{type(self).__name__}(engine={self.engine!r})"

    def start(
        self,
        *,
        state: str,
        binding: str,
        user_id: str,
        code_verifier: str,
        redirect_uri: str,
        scopes: Sequence[str],
        expected_open_id: str | None,
        now: datetime,
        ttl: timedelta = STATE_TTL,
    ) -> None:
        """Record a connect attempt (and forget attempts long expired)."""
        now = _aware(now, "now")
        state_hash = digest(state)
        payload = json.dumps({"state_hash": state_hash, "code_verifier": code_verifier}).encode()
        values = {
            "state_hash": state_hash,
            "session_hash": digest(binding),
            "user_id": str(user_id),
            "code_verifier_enc": _cipher(self._key).encrypt(payload),
            "redirect_uri": redirect_uri,
            "scopes": list(scopes),
            "expected_open_id": expected_open_id,
            "created_at": now,
            "expires_at": now + ttl,
        }
        with self.engine.begin() as conn:
            conn.execute(delete(oauth_states).where(oauth_states.c.expires_at < now - KEEP_EXPIRED))
            conn.execute(pg_insert(oauth_states).values(values))

    def finish(self, *, state: str | None, binding: str | None, user_id: str, now: datetime) -> PendingAuthorization:
        """
        Take the attempt ``state`` belongs to, once; raise :class:`StateRejected` if it cannot be.

        A state presented by another browser or user is not used up, so it cannot be burnt by
        someone who merely saw it.
        """
        now = _aware(now, "now")
        if not state:
            raise StateRejected("missing")
        state_hash = digest(state)
        with self.engine.begin() as conn:
            row = conn.execute(
                select(oauth_states).where(oauth_states.c.state_hash == state_hash).with_for_update()
            ).one_or_none()
            if row is None:
                raise StateRejected("unknown")
            if row.used_at is not None:
                raise StateRejected("used")
            if not binding or digest(binding) != row.session_hash or str(user_id) != row.user_id:
                raise StateRejected("other_session")
            conn.execute(update(oauth_states).where(oauth_states.c.state_hash == state_hash).values(used_at=now))
            expired = row.expires_at.astimezone(UTC) <= now
        if expired:  # used up all the same (committed above): a late retry says "used"
            raise StateRejected("expired")
        return PendingAuthorization(
            code_verifier=self._verifier(state_hash, row.code_verifier_enc),
            redirect_uri=row.redirect_uri,
            scopes=tuple(row.scopes or ()),
            expected_open_id=row.expected_open_id,
            user_id=row.user_id,
        )

    def _verifier(self, state_hash: str, ciphertext: bytes | memoryview) -> str:
        try:
            payload = json.loads(_cipher(self._key).decrypt(bytes(ciphertext)))
        except InvalidToken:
            raise TokenDecryptionError(
                "The connect attempt was started with another token encryption key than the one of the TikTok "
                "app's connection now; nothing was exchanged or stored. Restore the key (or list the old one "
                "after the new one, comma-separated) and connect the account again."
            ) from None
        if payload.get("state_hash") != state_hash:
            raise TokenDecryptionError("The stored connect attempt was tampered with; connect the account again.")
        return str(payload["code_verifier"])
