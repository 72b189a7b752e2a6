"""Hold OAuth state: authorization codes, access tokens and rotating refresh tokens.

Choices where the facts sheet leaves room (each one is something a real OAuth server may do, and a
client written against the facts sheet works either way):

- **Refresh rotates.**  A successful ``grant_type=refresh_token`` issues a new refresh token and the
  one presented stops working at once: presenting it again answers ``invalid_grant``.
- **Refreshing does not kill the previous access token.**  It stays valid until its own expiry (as
  most OAuth servers do), so an in-flight task holding it does not fail mid-run.
- A new refresh token gets a full ``refresh_ttl`` from the moment it is issued; the new pair keeps
  the scopes of the original authorization.
- **Codes are single-use and expire** after ``code_ttl`` (10 minutes) of simulated time.  A code is
  used up by the first *successful* exchange; an exchange that fails (wrong ``redirect_uri``, PKCE
  mismatch) leaves it usable, so the client can retry with the right values.
- **PKCE**: a code minted with a ``code_challenge`` needs a ``code_verifier`` whose RFC 7636 S256
  transform (base64url of SHA-256, no padding) equals the challenge (``plain`` is accepted when the
  code was minted with method ``plain``).  Missing or wrong verifier: ``invalid_grant``.
- **Revoke** (``/v2/oauth/revoke/``) withdraws the user's authorization of the app: every access and
  refresh token of that ``open_id`` stops working.  An unknown token is answered like a known one
  (RFC 7009), so revoking twice is harmless.
- Tokens look like ``act.<48 alnum>`` / ``rft.<48 alnum>``.  Token values are never logged or
  returned by the admin API; it shows a SHA-256 fingerprint (first 16 hex chars) instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

from tiktok_sim.fields import SCOPES

_ALNUM = string.ascii_letters + string.digits
TOKEN_BODY_LENGTH = 48


class OAuthError(Exception):
    """An OAuth failure, answered as ``{"error": ..., "error_description": ...}``."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


def random_token(prefix: str, length: int = TOKEN_BODY_LENGTH) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def fingerprint(token: str) -> str:
    """Return a non-secret handle on a token: the first 16 hex chars of its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def s256(verifier: str) -> str:
    """Return the RFC 7636 S256 code challenge of ``verifier``."""
    digest = hashlib.sha256(verifier.encode("ascii", errors="replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def parse_scopes(scopes: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Return known scopes in canonical order.

    :raises ValueError: on an unknown scope or an empty list.
    """
    items = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    wanted = {item.strip() for item in items if item.strip()}
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not wanted:
        raise ValueError("at least one scope is needed")
    return tuple(scope for scope in SCOPES if scope in wanted)


@dataclass
class AuthCode:
    open_id: str
    scopes: tuple[str, ...]
    redirect_uri: str
    expires_at: float
    code_challenge: str | None = None
    code_challenge_method: str = "S256"
    used: bool = False


@dataclass
class AccessToken:
    open_id: str
    scopes: frozenset[str]
    issued_at: float
    expires_at: float
    revoked: bool = False

    def valid(self, now: float) -> bool:
        return not self.revoked and now < self.expires_at


@dataclass
class RefreshToken:
    open_id: str
    scopes: tuple[str, ...]
    issued_at: float
    expires_at: float
    status: str = "active"  # active | rotated | revoked


@dataclass
class TokenStore:
    """Every code and token the simulator issued, keyed by value."""

    codes: dict[str, AuthCode] = field(default_factory=dict)
    access: dict[str, AccessToken] = field(default_factory=dict)
    refresh: dict[str, RefreshToken] = field(default_factory=dict)

    def mint_code(
        self,
        *,
        open_id: str,
        scopes: tuple[str, ...],
        redirect_uri: str,
        expires_at: float,
        code_challenge: str | None = None,
        code_challenge_method: str = "S256",
    ) -> str:
        """Issue an authorization code, as if the user had approved ``scopes``."""
        if code_challenge_method not in ("S256", "plain"):
            raise ValueError("code_challenge_method must be S256 or plain")
        code = random_token("", 64)
        self.codes[code] = AuthCode(
            open_id=open_id,
            scopes=scopes,
            redirect_uri=redirect_uri,
            expires_at=expires_at,
            code_challenge=code_challenge or None,
            code_challenge_method=code_challenge_method,
        )
        return code

    def _issue(
        self, open_id: str, scopes: tuple[str, ...], now: float, access_ttl: int, refresh_ttl: int
    ) -> dict[str, Any]:
        access_token = random_token("act.")
        refresh_token = random_token("rft.")
        self.access[access_token] = AccessToken(open_id, frozenset(scopes), now, now + access_ttl)
        self.refresh[refresh_token] = RefreshToken(open_id, scopes, now, now + refresh_ttl)
        return {
            "access_token": access_token,
            "expires_in": access_ttl,
            "open_id": open_id,
            "refresh_expires_in": refresh_ttl,
            "refresh_token": refresh_token,
            "scope": ",".join(scopes),
            "token_type": "Bearer",
        }

    def exchange_code(
        self,
        *,
        code: str,
        redirect_uri: str | None,
        code_verifier: str | None,
        now: float,
        access_ttl: int,
        refresh_ttl: int,
    ) -> dict[str, Any]:
        """Trade an authorization code for a token pair.

        :raises OAuthError: ``invalid_grant`` for an unknown, used or expired code, a
            ``redirect_uri`` mismatch or a failed PKCE check.
        """
        grant = self.codes.get(code)
        if grant is None:
            raise OAuthError("invalid_grant", "Authorization code is invalid.")
        if grant.used:
            raise OAuthError("invalid_grant", "Authorization code has already been used.")
        if now >= grant.expires_at:
            raise OAuthError("invalid_grant", "Authorization code is expired.")
        if redirect_uri != grant.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the one used to authorize.")
        if grant.code_challenge is not None:
            if not code_verifier:
                raise OAuthError("invalid_grant", "code_verifier is required for this authorization code.")
            expected = s256(code_verifier) if grant.code_challenge_method == "S256" else code_verifier
            if not hmac.compare_digest(expected.encode(), grant.code_challenge.encode()):
                raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge.")
        grant.used = True
        return self._issue(grant.open_id, grant.scopes, now, access_ttl, refresh_ttl)

    def refresh_grant(self, *, refresh_token: str, now: float, access_ttl: int, refresh_ttl: int) -> dict[str, Any]:
        """Rotate a refresh token into a new token pair.

        :raises OAuthError: ``invalid_grant`` for an unknown, rotated, revoked or expired token.
        """
        stored = self.refresh.get(refresh_token)
        if stored is None:
            raise OAuthError("invalid_grant", "Refresh token is invalid.")
        if stored.status == "rotated":
            raise OAuthError("invalid_grant", "Refresh token has been replaced by a newer one.")
        if stored.status == "revoked":
            raise OAuthError("invalid_grant", "Refresh token has been revoked.")
        if now >= stored.expires_at:
            raise OAuthError("invalid_grant", "Refresh token is expired.")
        stored.status = "rotated"
        return self._issue(stored.open_id, stored.scopes, now, access_ttl, refresh_ttl)

    def authenticate(self, access_token: str, now: float) -> AccessToken | None:
        """Return the live access token, or ``None`` if unknown, expired or revoked."""
        stored = self.access.get(access_token)
        return stored if stored is not None and stored.valid(now) else None

    def token_kind(self, token: str) -> str:
        if token in self.access:
            return "access"
        if token in self.refresh:
            return "refresh"
        return "unknown"

    def revoke_token(self, token: str) -> str:
        """Withdraw the authorization ``token`` belongs to; return the token's kind."""
        kind = self.token_kind(token)
        if kind == "access":
            self.revoke_account(self.access[token].open_id)
        elif kind == "refresh":
            self.revoke_account(self.refresh[token].open_id)
        return kind

    def expire_access_tokens(self, open_id: str, now: float) -> int:
        """Make every live access token of ``open_id`` expire now; return how many."""
        count = 0
        for stored in self.access.values():
            if stored.open_id == open_id and stored.valid(now):
                stored.expires_at = now
                count += 1
        return count

    def revoke_account(self, open_id: str, *, access: bool = True, refresh: bool = True) -> dict[str, int]:
        """Revoke the access and/or refresh tokens of ``open_id``; return how many were live."""
        counts = {"access": 0, "refresh": 0}
        if access:
            for stored in self.access.values():
                if stored.open_id == open_id and not stored.revoked:
                    stored.revoked = True
                    counts["access"] += 1
        if refresh:
            for stored_refresh in self.refresh.values():
                if stored_refresh.open_id == open_id and stored_refresh.status == "active":
                    stored_refresh.status = "revoked"
                    counts["refresh"] += 1
        return counts

    def describe(self, open_id: str, now: float) -> list[dict[str, Any]]:
        """Describe the tokens of ``open_id`` without their values, newest first."""
        rows: list[dict[str, Any]] = []
        for token, stored in self.access.items():
            if stored.open_id == open_id:
                status = "revoked" if stored.revoked else ("active" if stored.valid(now) else "expired")
                rows.append(self._row("access", token, stored.scopes, stored.issued_at, stored.expires_at, status))
        for token, stored_refresh in self.refresh.items():
            if stored_refresh.open_id == open_id:
                status = stored_refresh.status
                if status == "active" and now >= stored_refresh.expires_at:
                    status = "expired"
                rows.append(
                    self._row(
                        "refresh",
                        token,
                        stored_refresh.scopes,
                        stored_refresh.issued_at,
                        stored_refresh.expires_at,
                        status,
                    )
                )
        rows.sort(key=lambda row: row["issued_at"], reverse=True)
        return rows

    @staticmethod
    def _row(
        kind: str, token: str, scopes: frozenset[str] | tuple[str, ...], issued: float, expires: float, status: str
    ) -> dict[str, Any]:
        return {
            "kind": kind,
            "fingerprint": fingerprint(token),
            "scopes": [scope for scope in SCOPES if scope in scopes],
            "issued_at": issued,
            "expires_at": expires,
            "status": status,
        }
