"""OAuth: the token endpoint's calls, the token types, the ``TokenStore`` protocol, and where a token is refreshed.

:class:`OAuthCalls` exchanges a code, trades a refresh token (``refresh_grant``) and revokes;
:class:`AccessTokens` hands out an account's access token and refreshes it -- before it expires and
once more when TikTok rejects it -- under the caller's :class:`TokenStore` lease. The provider owns
no storage: whoever builds the hook passes a store that follows :class:`TokenStore`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from tiktok_provider import errors, metrics
from tiktok_provider.connection import mask
from tiktok_provider.errors import AccountNotFound, TokenStoreError
from tiktok_provider.responses import decode_json, parse_oauth

if TYPE_CHECKING:
    from tiktok_provider.client import RequestCounts, TikTokClient
    from tiktok_provider.connection import TikTokConnectionConfig

__all__ = [
    "AccessTokens",
    "AccountNotFound",
    "AccountTokens",
    "OAuthCalls",
    "TokenGrant",
    "TokenStore",
    "TokenStoreError",
    "refresh_lease",
]

OAUTH_TOKEN = "/v2/oauth/token/"
OAUTH_REVOKE = "/v2/oauth/revoke/"
#: What the store assumes when a token answer leaves a value out.
ASSUMED = {
    "open_id": "the account that was refreshed",
    "access_token": "the access token marked expired (its next use refreshes)",
    "expires_in": "the access token marked expired (its next use refreshes)",
    "refresh_expires_in": "a conservative refresh expiry",
    "scope": "the scopes already known",
}
#: Seconds a refresh's HTTP attempts keep clear of the end of its lease.
LEASE_SAFETY_SECONDS = 5.0


@dataclass(frozen=True)
class TokenGrant:
    """What the OAuth token endpoint returned (for a code exchange or a refresh)."""

    open_id: str
    access_token: str = field(repr=False)
    expires_in: int
    refresh_token: str = field(repr=False)
    #: None when TikTok did not say: the store then assumes a conservative expiry.
    refresh_expires_in: int | None
    #: None when TikTok did not say: the store then keeps the scopes it knows.
    scopes: frozenset[str] | None
    obtained_at: datetime
    log_id: str | None = None


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
    #: TikTok did not state the refresh token's lifetime: ``refresh_expires_at`` is an estimate.
    refresh_expiry_estimated: bool = False


class TokenStore(Protocol):
    """What the provider needs from wherever account tokens live.

    Errors: :class:`AccountNotFound` for an unknown account; subclasses of :class:`TokenStoreError`
    for the store's own failures (with ``retryable`` saying whether a later try can help).
    """

    def get(self, open_id: str) -> AccountTokens:
        """Return the stored tokens of an account."""
        ...

    def refresh_locked(
        self,
        open_id: str,
        refresh: Callable[[AccountTokens], TokenGrant],
        *,
        min_remaining: timedelta,
        stale_access_token: str | None = None,
        lease: timedelta = ...,
    ) -> AccountTokens:
        """Return tokens with ``min_remaining`` left, calling ``refresh`` under the account's lease if needed.

        Only one worker refreshes an account at a time; the rotated refresh token is stored before
        the new access token is returned. ``stale_access_token``: one TikTok just rejected.
        """
        ...

    def check_ready(self) -> None:
        """Raise :class:`TokenStoreError` unless a grant could be saved now (before a credential is spent)."""
        ...

    def save_grant(self, grant: TokenGrant, **profile: Any) -> None:
        """Connect or reconnect the account the grant is for: store its tokens, make it active."""
        ...


def _scopes(value: Any) -> frozenset[str] | None:
    """The scopes of a token answer (comma-separated, or a list), or None when it states none usable."""
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        return None
    scopes = frozenset(item.strip() for item in items if isinstance(item, str) and item.strip())
    return scopes or None


def refresh_lease(config: TikTokConnectionConfig) -> timedelta:
    """The lease a refresh takes: the configured one, but always room for one full HTTP attempt."""
    per_attempt = config.connect_timeout + config.read_timeout
    return timedelta(seconds=max(config.refresh_lease_seconds, per_attempt + 2 * LEASE_SAFETY_SECONDS))


class OAuthCalls:
    """The OAuth token endpoint: exchange a code, refresh a grant, revoke a token (with the client's retries)."""

    def __init__(self, client: TikTokClient, *, log: logging.Logger | Any = None) -> None:
        self.client = client
        self.config = client.config
        self.log = log or logging.getLogger(__name__)

    def _client_form(self) -> dict[str, str]:
        return {"client_key": self.config.client_key, "client_secret": self.config.client_secret}

    def token_call(
        self, form: dict[str, str], *, open_id: str | None, deadline: float | None = None, cutoff: float | None = None
    ) -> TokenGrant:
        """POST to the token endpoint (with retries) and turn its answer into a grant to store.

        :param open_id: the account refreshed, when known (a code exchange knows none).
        :param deadline: a ``time.monotonic()`` value no retry may run past.
        :param cutoff: a ``time.monotonic()`` value by which an answer must be in full (default: a
            refresh lease from each attempt's start).
        """
        lost: list[errors.TikTokNetworkError] = []

        def once() -> dict[str, Any]:
            obtained_at = datetime.now(UTC)
            by = cutoff if cutoff is not None else time.monotonic() + refresh_lease(self.config).total_seconds()
            try:
                resp = self.client.send("POST", OAUTH_TOKEN, open_id=open_id, form=form, cutoff=by)
                payload = parse_oauth(resp.status_code, resp.content, endpoint=OAUTH_TOKEN, open_id=open_id)
            except errors.TikTokNetworkError as exc:  # the request may have been served all the same
                lost.append(exc)
                raise
            payload["_obtained_at"] = obtained_at
            return payload

        try:
            payload = self.client.retrying(OAUTH_TOKEN, deadline=deadline)(once)
        except errors.TikTokReauthRequired as exc:
            if not lost:
                raise
            # TikTok spends the code, or rotates the refresh token, when it answers; if that answer
            # never arrived, the retry presents a credential already used. Say so: the log alone
            # looks like a revoke.
            spent = (
                "had most likely rotated the refresh token then, and the new one was lost in transit"
                if form.get("grant_type") == "refresh_token"
                else "had most likely accepted the code then, and the tokens it bought were lost in transit"
            )
            raise errors.TikTokReauthRequired(
                f"{exc.message} -- an earlier attempt got no usable answer ({lost[-1].message}): TikTok {spent}",
                endpoint=exc.endpoint,
                open_id=exc.open_id,
                http_status=exc.http_status,
                code=exc.code,
                log_id=exc.log_id,
            ) from None
        mask(payload["access_token"])
        mask(payload["refresh_token"])
        log_id = payload.get("log_id") if isinstance(payload.get("log_id"), str) else None
        refreshing = form.get("grant_type") == "refresh_token"
        account = payload["open_id"] or open_id
        if account is None:
            # A code exchange (or a connect by refresh token) learns the account from the answer alone.
            spent = "the refresh token was rotated" if refreshing else "the authorization code is spent"
            raise errors.TikTokMalformedResponse(
                f"TikTok issued tokens but its answer names no account (no open_id), so they cannot be stored; "
                f"{spent}. Have the account's owner authorize the app again and trigger the tiktok_connect_account "
                "DAG with the new auth_code",
                endpoint=OAUTH_TOKEN,
                log_id=log_id,
            )
        if open_id is not None and account != open_id:
            # Not ours: storing them would sync another creator's data as this account's. Nothing is
            # stored; if TikTok did rotate this account's token, its next refresh says invalid_grant.
            raise errors.TikTokMalformedResponse(
                f"the refresh answered for another account ({account}); nothing was stored. If this account's next "
                "refresh is refused, have its owner authorize the app again",
                endpoint=OAUTH_TOKEN,
                open_id=open_id,
                log_id=log_id,
            )
        # TikTok has spent the code or rotated the refresh token by now: an answer that leaves out
        # something we can live without is stored all the same, never thrown away.
        scopes = _scopes(payload.get("scope"))
        given = {
            "open_id": payload["open_id"],
            "access_token": payload["access_token"],
            "expires_in": payload["expires_in"],
            "refresh_expires_in": payload.get("refresh_expires_in"),
            "scope": scopes,
        }
        missing = [key for key, value in given.items() if value is None]
        if missing:
            self.log.warning(
                "The token answer for account %s lacks a usable %s [endpoint=%s, log_id=%s]; storing the tokens "
                "anyway (TikTok has already rotated them) with %s",
                account,
                " and ".join(missing),
                OAUTH_TOKEN,
                log_id,
                " and ".join(dict.fromkeys(ASSUMED[key] for key in missing)),
            )
        return TokenGrant(
            open_id=account,
            # No access token, or no lifetime for it: stored as expired, so its next use refreshes.
            access_token=payload["access_token"] or "",
            expires_in=payload["expires_in"] if payload["access_token"] and payload["expires_in"] else 0,
            refresh_token=payload["refresh_token"],
            refresh_expires_in=payload.get("refresh_expires_in"),
            scopes=scopes,
            obtained_at=payload["_obtained_at"],
            log_id=log_id,
        )

    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str | None = None) -> TokenGrant:
        """Exchange an authorization code for the account's first tokens."""
        mask(code)
        form = {
            **self._client_form(),
            "code": code,
            "grant_type": "authorization_code",
            "redirect_uri": redirect_uri,
        }
        if code_verifier:
            form["code_verifier"] = code_verifier
        return self.token_call(form, open_id=None)

    def refresh_grant(
        self,
        refresh_token: str,
        *,
        open_id: str | None = None,
        deadline: float | None = None,
        cutoff: float | None = None,
    ) -> TokenGrant:
        """Trade a refresh token for new tokens (the old refresh token stops working).

        :param deadline: a ``time.monotonic()`` value by which the last retry must have ended.
        :param cutoff: a ``time.monotonic()`` value by which an answer must be in full, however slowly
            it arrives (default: a refresh lease from each attempt's start).
        """
        mask(refresh_token)
        form = {**self._client_form(), "grant_type": "refresh_token", "refresh_token": refresh_token}
        return self.token_call(form, open_id=open_id, deadline=deadline, cutoff=cutoff)

    def revoke_token(self, token: str, *, open_id: str | None = None, within: float | None = None) -> None:
        """Revoke an access or refresh token.

        :param within: seconds the whole call may take, answer included (a person waiting on a page);
            shorter than one full attempt, it makes exactly one try. Default: the retry policy's.
        """
        mask(token)
        deadline = time.monotonic() + within if within is not None else None

        def once() -> None:
            resp = self.client.send(
                "POST", OAUTH_REVOKE, open_id=open_id, form={**self._client_form(), "token": token}, cutoff=deadline
            )
            try:
                payload = decode_json(resp.content or b"{}")
            except ValueError:
                payload = {}
            failed = isinstance(payload, dict) and isinstance(payload.get("error"), str) and payload["error"]
            if failed or resp.status_code >= 500:
                parse_oauth(resp.status_code, resp.content, endpoint=OAUTH_REVOKE, open_id=open_id)
                raise errors.TikTokServerError(
                    "revoke failed", endpoint=OAUTH_REVOKE, open_id=open_id, http_status=resp.status_code
                )

        self.client.retrying(OAUTH_REVOKE, deadline=deadline)(once)


class AccessTokens:
    """Where an access token is handed out and refreshed: the one place, for every endpoint.

    :param oauth: the token endpoint's calls (a refresh trades the stored refresh token).
    :param store: returns the caller's token store (built on first use).
    :param counts: where refreshes are counted.
    """

    def __init__(
        self,
        oauth: OAuthCalls,
        store: Callable[[], TokenStore],
        *,
        counts: RequestCounts,
        log: logging.Logger | Any = None,
    ) -> None:
        self.oauth = oauth
        self.config = oauth.config
        self._store = store
        self.counts = counts
        self.log = log or logging.getLogger(__name__)
        #: The tokens last read or refreshed, per account (one task's worth).
        self.cache: dict[str, AccountTokens] = {}

    @property
    def lease(self) -> timedelta:
        return refresh_lease(self.config)

    def access_token(self, open_id: str, *, stale: str | None = None) -> str:
        """Return a usable access token for the account, refreshing it first when needed.

        :param stale: a token TikTok just rejected; it is refreshed unless another worker did already.
        """
        tokens = self.cache.get(open_id) or self._store().get(open_id)
        if tokens.status != "active":
            raise errors.TikTokAccountNotActive(
                f"account status is {tokens.status!r}", endpoint=OAUTH_TOKEN, open_id=open_id
            )
        mask(tokens.access_token)
        margin = timedelta(seconds=self.config.refresh_margin_seconds)
        now = datetime.now(UTC)
        if stale is not None or tokens.access_expires_at - now <= margin:
            tokens = self._refreshed(open_id, stale)
        self.cache[open_id] = tokens
        return tokens.access_token

    def _refreshed(self, open_id: str, stale: str | None) -> AccountTokens:
        """Refresh under the store's lease; once more if TikTok's answer held a refresh token but no access token."""
        margin = timedelta(seconds=self.config.refresh_margin_seconds)
        for _attempt in range(2):
            tokens = self._store().refresh_locked(
                open_id,
                self._refresh_callback(open_id),
                min_remaining=margin,
                stale_access_token=stale,
                lease=self.lease,
            )
            mask(tokens.access_token)
            mask(tokens.refresh_token)
            if tokens.access_token:
                return tokens
            stale = None  # stored as expired: the next refresh_locked refreshes it
        raise errors.TikTokServerError(
            "TikTok's refresh answers held a refresh token but no access token, twice; the rotated refresh token is "
            "stored, so a later try refreshes again",
            endpoint=OAUTH_TOKEN,
            open_id=open_id,
        )

    def _refresh_callback(self, open_id: str) -> Callable[[AccountTokens], TokenGrant]:
        def refresh(current: AccountTokens) -> TokenGrant:
            # Called right after the lease was taken: stop retrying in time to end within it. An answer
            # already arriving may take one lease more: a worker that takes the lease over and is told
            # invalid_grant waits that long for us to store the token TikTok rotated (the store's
            # refresh_locked), so the cutoff keeps clear of the end of that wait.
            lease = self.lease.total_seconds()
            deadline = time.monotonic() + lease - LEASE_SAFETY_SECONDS
            cutoff = deadline + lease
            if current.refresh_expires_at <= datetime.now(UTC):
                # Only TikTok can tell for sure (a stated lifetime may have been lengthened since): ask anyway.
                self.log.info(
                    "The refresh token of account %s %s; trying it all the same: TikTok refusing it is what "
                    "marks the account reauth_required",
                    open_id,
                    "passed its estimated expiry (TikTok did not state it)"
                    if current.refresh_expiry_estimated
                    else "may have expired",
                )
            self.log.info("Refreshing the access token of account %s", open_id)
            self.counts.refreshes += 1
            grant = self.oauth.refresh_grant(current.refresh_token, open_id=open_id, deadline=deadline, cutoff=cutoff)
            metrics.token_refresh()  # TikTok answered with new tokens
            return grant

        return refresh

    def scopes(self, open_id: str) -> frozenset[str]:
        tokens = self.cache.get(open_id) or self._store().get(open_id)
        self.cache[open_id] = tokens
        return tokens.scopes
