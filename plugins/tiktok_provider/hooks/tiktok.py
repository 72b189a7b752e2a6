"""TikTokDisplayHook: the Display API v2 and its OAuth token endpoint, for many accounts.

One hook serves one TikTok app (the ``tiktok`` connection: base URL as host, client key as login,
client secret as password, ``token_encryption_key`` and tuning in the extra) and every account
connected to it. Access and refresh tokens live encrypted in the warehouse's token store; the hook
refreshes them before they expire and once more when TikTok rejects one, persisting the rotated
refresh token before the new access token is used. A refresh runs under the store's lease on the
account, never inside a database transaction; its HTTP attempts stop in time to end within the lease.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import tenacity
from airflow.sdk import BaseHook

from tiktok_provider import errors
from tiktok_provider.budget import budget_for
from tiktok_provider.fields import INT64_MAX, VIDEO_FIELDS, allowed_user_fields, missing_scopes
from tiktok_provider.responses import (
    VIDEO_ID,
    Envelope,
    Issues,
    VideoPage,
    clean_record,
    decode_json,
    parse_envelope,
    parse_oauth,
    parse_video_page,
    parse_video_query,
)

if TYPE_CHECKING:
    import requests

    from tiktok_warehouse.tokens import AccountTokens, TokenGrant, TokenStore

USER_INFO = "/v2/user/info/"
VIDEO_LIST = "/v2/video/list/"
VIDEO_QUERY = "/v2/video/query/"
OAUTH_TOKEN = "/v2/oauth/token/"
OAUTH_REVOKE = "/v2/oauth/revoke/"
QUERY_BATCH = 20
PAGE_SIZE = 20
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


def _mask(value: str | None) -> None:
    if value:
        from airflow.sdk.log import mask_secret

        mask_secret(value)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_list(value: Any) -> list[str]:
    """Read a list of host names given as a JSON list or a comma-separated string."""
    if not value:
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(item).strip().lower() for item in items if str(item).strip()]


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


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


def _read_by(resp: requests.Response, cutoff: float, read_timeout: float, *, path: str, open_id: str | None) -> bytes:
    """Read a streamed answer's body, giving up at ``cutoff`` (``time.monotonic()``) however it trickles in.

    Each read waits for at most what is left until the cutoff (the socket's timeout is lowered to
    that), and returns what one packet brought, so a drip cannot carry the read past the cutoff.
    """
    import urllib3.exceptions

    if not hasattr(resp.raw, "read1"):  # a transport adapter that hands over the whole body (tests)
        return resp.content
    sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
    chunks: list[bytes] = []
    try:
        while True:
            left = cutoff - time.monotonic()
            if left <= 0:
                raise errors.TikTokNetworkError(
                    f"the answer was not complete in time ({sum(map(len, chunks))} bytes read); gave up so as to "
                    "end within the refresh lease",
                    endpoint=path,
                    open_id=open_id,
                    http_status=resp.status_code,
                )
            if sock is not None:
                sock.settimeout(min(read_timeout, left))
            chunk = resp.raw.read1(65536, decode_content=True)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except (OSError, urllib3.exceptions.HTTPError) as exc:
        late = time.monotonic() >= cutoff
        raise errors.TikTokNetworkError(
            "the answer was not complete in time; gave up so as to end within the refresh lease"
            if late
            else f"the answer broke off ({type(exc).__name__})",
            endpoint=path,
            open_id=open_id,
            http_status=resp.status_code,
        ) from None
    finally:
        resp.close()


@dataclass(frozen=True)
class TikTokConnectionConfig:
    """Everything environment-specific, read from the Airflow connection."""

    base_url: str
    client_key: str
    client_secret: str = field(repr=False)
    token_encryption_key: str | None = field(repr=False, default=None)
    warehouse_conn_id: str = "tiktok_warehouse"
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    rate_limit_per_minute: int = 540
    rate_limit_window_seconds: float = 60.0
    max_attempts: int = 6
    max_backoff_seconds: float = 60.0
    refresh_margin_seconds: float = 300.0
    #: How long other workers wait for this one's token refresh of an account (its HTTP attempts
    #: stop in time to end within it); also the longest a worker that died mid-refresh blocks them.
    refresh_lease_seconds: float = 120.0
    #: Hosts (besides loopback) that may get bearer tokens over plain http: a simulator in its own
    #: container, never a real API host.
    insecure_http_hosts: frozenset[str] = frozenset()
    # -- rate budget (tiktok_provider.budget) --
    #: "postgres" (default), "redis" or "process": where every process's requests draw from one budget.
    rate_budget: str = "postgres"
    #: The Postgres of the shared budget: an Airflow connection id or a URL (default: the warehouse).
    rate_budget_conn_id: str = "tiktok_warehouse"
    #: With rate_budget=redis: a redis:// URL or an Airflow connection id (may hold a password).
    rate_budget_redis_url: str | None = field(repr=False, default=None)
    #: The share of each window a bulk caller (a full backfill) leaves free for the others.
    rate_budget_reserve: float = 0.2
    #: The share of the limit one process paces itself at while the shared store is unreachable.
    rate_budget_fallback_share: float = 0.125

    @classmethod
    def from_connection(cls, conn: Any) -> TikTokConnectionConfig:
        extra = conn.extra_dejson or {}
        host = (conn.host or "https://open.tiktokapis.com").rstrip("/")
        if "://" not in host:
            host = f"https://{host}"
        if conn.port and urlsplit(host).port is None:
            host = f"{host}:{conn.port}"

        def num(key: str, default: float, typ: type = float) -> Any:
            value = extra.get(key)
            return default if value in (None, "") else typ(value)

        return cls(
            base_url=host,
            client_key=conn.login or "",
            client_secret=conn.password or "",
            token_encryption_key=extra.get("token_encryption_key") or None,
            warehouse_conn_id=extra.get("warehouse_conn_id") or "tiktok_warehouse",
            connect_timeout=num("connect_timeout", 10.0),
            read_timeout=num("read_timeout", 30.0),
            rate_limit_per_minute=num("rate_limit_per_minute", 540, int),
            rate_limit_window_seconds=num("rate_limit_window_seconds", 60.0),
            max_attempts=num("max_attempts", 6, int),
            max_backoff_seconds=num("max_backoff_seconds", 60.0),
            refresh_margin_seconds=num("refresh_margin_seconds", 300.0),
            refresh_lease_seconds=num("refresh_lease_seconds", 120.0),
            insecure_http_hosts=frozenset(_host_list(extra.get("insecure_http_hosts"))),
            rate_budget=str(extra.get("rate_budget") or "postgres"),
            rate_budget_conn_id=(
                extra.get("rate_budget_conn_id") or extra.get("warehouse_conn_id") or "tiktok_warehouse"
            ),
            rate_budget_redis_url=extra.get("rate_budget_redis_url") or extra.get("rate_budget_redis_conn_id") or None,
            rate_budget_reserve=num("rate_budget_reserve", 0.2),
            rate_budget_fallback_share=num("rate_budget_fallback_share", 0.125),
        )


class TikTokDisplayHook(BaseHook):
    """
    Call the TikTok Display API on behalf of connected accounts.

    :param tiktok_conn_id: the ``tiktok`` connection of the TikTok app.
    :param token_store: where account tokens live; by default the warehouse named by the
        connection's ``warehouse_conn_id`` extra (``tiktok_warehouse``).
    :param sleep: how to wait between retries (tests pass a recorder instead of sleeping).
    :param priority: the rate budget's priority of this hook's calls: ``interactive`` (connecting,
        a new account's first sync), ``normal`` (snapshots, cover refresh) or ``bulk`` (full
        backfills, which leave the connection's ``rate_budget_reserve`` free for the others).
        An attribute: a caller may change it between calls.
    """

    conn_name_attr = "tiktok_conn_id"
    default_conn_name = "tiktok_default"
    conn_type = "tiktok"
    hook_name = "TikTok Display API"

    def __init__(
        self,
        tiktok_conn_id: str = default_conn_name,
        *,
        token_store: TokenStore | None = None,
        sleep: Callable[[float], None] = time.sleep,
        priority: str = "normal",
    ) -> None:
        super().__init__()
        self.tiktok_conn_id = tiktok_conn_id
        self.priority = priority
        self._token_store = token_store
        self._sleep = sleep
        self._tokens: dict[str, AccountTokens] = {}
        self.calls: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.refreshes = 0
        self.issues = Issues()

    # -- connection -----------------------------------------------------------------------

    @cached_property
    def config(self) -> TikTokConnectionConfig:
        config = TikTokConnectionConfig.from_connection(self.get_connection(self.tiktok_conn_id))
        _mask(config.client_secret)
        _mask(config.token_encryption_key)
        return config

    def get_conn(self) -> requests.Session:
        """Return the HTTP session (built once; no network until a call is made)."""
        if not hasattr(self, "_session"):
            import requests  # here, not at the top: every DAG file importing the operators would pay ~30 ms

            session = requests.Session()
            session.headers["User-Agent"] = "airflow-tiktok-display/0.1"
            session.trust_env = False
            self._session = session
        return self._session

    @property
    def token_store(self) -> TokenStore:
        if self._token_store is None:
            from tiktok_warehouse.db import get_engine
            from tiktok_warehouse.tokens import TokenStore

            self._token_store = TokenStore(get_engine(self.config.warehouse_conn_id), self.config.token_encryption_key)
        return self._token_store

    def test_connection(self) -> tuple[bool, str]:
        """Check the app credentials with one cheap real call: refresh with a token that cannot exist.

        TikTok answers ``invalid_grant`` when the client key and secret are right, and
        ``invalid_client`` when they are not; no account is touched.
        """
        try:
            self.refresh_grant("rft.connection-test")
        except errors.TikTokReauthRequired:
            return True, f"Connected to {self.config.base_url}: client key and secret accepted."
        except errors.TikTokError as exc:
            return False, str(exc)
        return False, "The token endpoint accepted a made-up refresh token; is the host really TikTok?"

    # -- HTTP -----------------------------------------------------------------------------

    def _url(self, path: str, *, bearer: bool) -> str:
        parts = urlsplit(self.config.base_url)
        trusted = _is_loopback(parts.hostname) or parts.hostname in self.config.insecure_http_hosts
        if bearer and parts.scheme != "https" and not trusted:
            raise errors.TikTokConfigError(
                f"refusing to send a bearer token over {parts.scheme}:// to {parts.hostname}; "
                "use https (plain http is only allowed for loopback hosts and the connection's insecure_http_hosts)",
                endpoint=path,
            )
        return f"{self.config.base_url}{path}"

    def _send(
        self,
        method: str,
        path: str,
        *,
        open_id: str | None,
        bearer: str | None = None,
        params: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        form: dict[str, str] | None = None,
        cutoff: float | None = None,
    ) -> requests.Response:
        """Send one request; with ``cutoff`` (a ``time.monotonic()`` value) the whole answer must be in by then.

        ``read_timeout`` bounds each socket read, not the answer: a body trickled in a byte at a time
        would never time out. So a capped call streams the body and gives up at the cutoff, and its
        connect and first-byte timeouts are cut to the time left.
        """
        import requests

        url = self._url(path, bearer=bearer is not None or form is not None)
        cfg = self.config
        limiter = budget_for(cfg, path)
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        timeout = (cfg.connect_timeout, cfg.read_timeout)
        if cutoff is not None:
            left = max(0.1, cutoff - time.monotonic())
            timeout = (min(cfg.connect_timeout, left), min(cfg.read_timeout, left))
        try:
            with limiter.slot(self.priority):
                self.calls[path] += 1
                resp = self.get_conn().request(
                    method,
                    url,
                    params=params,
                    json=json_body,
                    data=form,
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=False,
                    stream=cutoff is not None,
                )
            if cutoff is not None:
                # requests' own cache of the body (what ``resp.content`` returns once read)
                resp._content = _read_by(resp, cutoff, cfg.read_timeout, path=path, open_id=open_id)
            return resp
        except requests.Timeout as exc:
            raise errors.TikTokNetworkError(
                f"timed out ({type(exc).__name__})", endpoint=path, open_id=open_id
            ) from None
        except requests.RequestException as exc:
            raise errors.TikTokNetworkError(
                f"connection failed ({type(exc).__name__})", endpoint=path, open_id=open_id
            ) from None

    def _retrying(self, what: str, *, deadline: float | None = None) -> tenacity.Retrying:
        """The one retry policy: 429, 5xx, timeouts and connection errors, exponential backoff, full jitter.

        :param deadline: a ``time.monotonic()`` value no attempt may run past (a refresh lease):
            no attempt starts that could not finish before it.
        """
        cap = self.config.max_backoff_seconds
        per_attempt = self.config.connect_timeout + self.config.read_timeout
        jitter = tenacity.wait_random_exponential(multiplier=0.5, max=cap)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = getattr(exc, "retry_after", None)
            delay = min(float(retry_after), cap) if retry_after is not None else jitter(state)
            if isinstance(exc, errors.TikTokRateLimited):
                budget_for(self.config, what).pause(delay)  # the whole app backs off, not this process
            return delay

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.retries[what] += 1
            self.log.warning(
                "Retrying %s in %.1fs (attempt %d): %s",
                what,
                state.next_action.sleep if state.next_action else 0.0,
                state.attempt_number,
                exc,
            )

        def out_of_time(state: tenacity.RetryCallState) -> bool:
            return deadline is not None and time.monotonic() + state.upcoming_sleep + per_attempt > deadline

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda exc: getattr(exc, "retryable", False)),
            wait=wait,
            stop=tenacity.stop_after_attempt(max(1, self.config.max_attempts)) | out_of_time,
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

    def _api_once(
        self, method: str, path: str, open_id: str, token: str, params: dict[str, str], body: dict | None
    ) -> Envelope:
        resp = self._send(method, path, open_id=open_id, bearer=token, params=params, json_body=body)
        return parse_envelope(
            resp.status_code,
            resp.content,
            endpoint=path,
            open_id=open_id,
            header_log_id=resp.headers.get("x-tt-logid"),
            retry_after=_retry_after(resp.headers),
        )

    def _call_api(
        self, method: str, path: str, *, open_id: str, fields: Sequence[str], body: dict | None = None
    ) -> Envelope:
        """Call a data endpoint for one account with retries and one reactive token refresh."""
        params = {"fields": ",".join(fields)}
        token = self.access_token(open_id)
        try:
            return self._retrying(path)(self._api_once, method, path, open_id, token, params, body)
        except errors.TikTokAccessTokenInvalid:
            self.log.info("Access token of %s rejected by %s; refreshing once", open_id, path)
            token = self.access_token(open_id, stale=token)
            return self._retrying(path)(self._api_once, method, path, open_id, token, params, body)

    # -- OAuth ----------------------------------------------------------------------------

    def _token_call(
        self, form: dict[str, str], *, open_id: str | None, deadline: float | None = None, cutoff: float | None = None
    ) -> TokenGrant:
        """POST to the token endpoint (with retries) and turn its answer into a grant to store.

        :param open_id: the account refreshed, when known (a code exchange knows none).
        :param deadline: a ``time.monotonic()`` value no retry may run past.
        :param cutoff: a ``time.monotonic()`` value by which an answer must be in full (default: a
            refresh lease from each attempt's start).
        """
        from tiktok_warehouse.tokens import TokenGrant

        lost: list[errors.TikTokNetworkError] = []

        def once() -> dict[str, Any]:
            obtained_at = datetime.now(UTC)
            by = cutoff if cutoff is not None else time.monotonic() + self.refresh_lease.total_seconds()
            try:
                resp = self._send("POST", OAUTH_TOKEN, open_id=open_id, form=form, cutoff=by)
                payload = parse_oauth(resp.status_code, resp.content, endpoint=OAUTH_TOKEN, open_id=open_id)
            except errors.TikTokNetworkError as exc:  # the request may have been served all the same
                lost.append(exc)
                raise
            payload["_obtained_at"] = obtained_at
            return payload

        try:
            payload = self._retrying(OAUTH_TOKEN, deadline=deadline)(once)
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
        _mask(payload["access_token"])
        _mask(payload["refresh_token"])
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

    def _client_form(self) -> dict[str, str]:
        return {"client_key": self.config.client_key, "client_secret": self.config.client_secret}

    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str | None = None) -> TokenGrant:
        """Exchange an authorization code for the account's first tokens."""
        _mask(code)
        form = {
            **self._client_form(),
            "code": code,
            "grant_type": "authorization_code",
            "redirect_uri": redirect_uri,
        }
        if code_verifier:
            form["code_verifier"] = code_verifier
        return self._token_call(form, open_id=None)

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
        _mask(refresh_token)
        form = {**self._client_form(), "grant_type": "refresh_token", "refresh_token": refresh_token}
        return self._token_call(form, open_id=open_id, deadline=deadline, cutoff=cutoff)

    def revoke_token(self, token: str, *, open_id: str | None = None, within: float | None = None) -> None:
        """Revoke an access or refresh token.

        :param within: seconds the whole call may take, answer included (a person waiting on a page);
            shorter than one full attempt, it makes exactly one try. Default: the retry policy's.
        """
        _mask(token)
        deadline = time.monotonic() + within if within is not None else None

        def once() -> None:
            resp = self._send(
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

        self._retrying(OAUTH_REVOKE, deadline=deadline)(once)

    # -- tokens ---------------------------------------------------------------------------

    def access_token(self, open_id: str, *, stale: str | None = None) -> str:
        """Return a usable access token for the account, refreshing it first when needed.

        :param stale: a token TikTok just rejected; it is refreshed unless another worker did already.
        """
        tokens = self._tokens.get(open_id) or self.token_store.get(open_id)
        if tokens.status != "active":
            raise errors.TikTokReauthRequired(
                f"account status is {tokens.status!r}", endpoint=OAUTH_TOKEN, open_id=open_id
            )
        _mask(tokens.access_token)
        margin = timedelta(seconds=self.config.refresh_margin_seconds)
        now = datetime.now(UTC)
        if stale is not None or tokens.access_expires_at - now <= margin:
            tokens = self._refreshed(open_id, stale)
        self._tokens[open_id] = tokens
        return tokens.access_token

    def _refreshed(self, open_id: str, stale: str | None) -> AccountTokens:
        """Refresh under the store's lease; once more if TikTok's answer held a refresh token but no access token."""
        margin = timedelta(seconds=self.config.refresh_margin_seconds)
        for _attempt in range(2):
            tokens = self.token_store.refresh_locked(
                open_id,
                self._refresh_callback(open_id),
                min_remaining=margin,
                stale_access_token=stale,
                lease=self.refresh_lease,
            )
            _mask(tokens.access_token)
            _mask(tokens.refresh_token)
            if tokens.access_token:
                return tokens
            stale = None  # stored as expired: the next refresh_locked refreshes it
        raise errors.TikTokServerError(
            "TikTok's refresh answers held a refresh token but no access token, twice; the rotated refresh token is "
            "stored, so a later try refreshes again",
            endpoint=OAUTH_TOKEN,
            open_id=open_id,
        )

    @property
    def refresh_lease(self) -> timedelta:
        """The lease a refresh takes: the configured one, but always room for one full HTTP attempt."""
        per_attempt = self.config.connect_timeout + self.config.read_timeout
        return timedelta(seconds=max(self.config.refresh_lease_seconds, per_attempt + 2 * LEASE_SAFETY_SECONDS))

    def _refresh_callback(self, open_id: str) -> Callable[[AccountTokens], TokenGrant]:
        def refresh(current: AccountTokens) -> TokenGrant:
            # Called right after the lease was taken: stop retrying in time to end within it. An answer
            # already arriving may take one lease more: a worker that takes the lease over and is told
            # invalid_grant waits that long for us to store the token TikTok rotated (the store's
            # refresh_locked), so the cutoff keeps clear of the end of that wait.
            lease = self.refresh_lease.total_seconds()
            deadline = time.monotonic() + lease - LEASE_SAFETY_SECONDS
            cutoff = deadline + lease
            if current.refresh_expires_at <= datetime.now(UTC):
                # Our record of the expiry may be an estimate (TikTok did not always say): ask anyway.
                self.log.info("The refresh token of account %s may have expired; trying it all the same", open_id)
            self.log.info("Refreshing the access token of account %s", open_id)
            self.refreshes += 1
            return self.refresh_grant(current.refresh_token, open_id=open_id, deadline=deadline, cutoff=cutoff)

        return refresh

    def scopes(self, open_id: str) -> frozenset[str]:
        tokens = self._tokens.get(open_id) or self.token_store.get(open_id)
        self._tokens[open_id] = tokens
        return tokens.scopes

    def _check_fields(self, open_id: str, endpoint: str, fields: Sequence[str], *, kind: str) -> None:
        try:
            lacking = missing_scopes(fields, self.scopes(open_id), kind=kind)
        except ValueError as exc:
            raise errors.TikTokInvalidParams(str(exc), endpoint=endpoint, open_id=open_id) from None
        if lacking:
            raise errors.TikTokScopeError(
                f"fields {sorted(fields)} need scope(s) {sorted(lacking)} the account did not grant",
                endpoint=endpoint,
                open_id=open_id,
                code="scope_not_authorized",
            )

    # -- Display API ----------------------------------------------------------------------

    def get_user_info(self, open_id: str, fields: Sequence[str] | None = None) -> dict[str, Any]:
        """Return the account's profile: the given fields, or every field its scopes allow."""
        fields = list(fields) if fields is not None else list(allowed_user_fields(self.scopes(open_id)))
        self._check_fields(open_id, USER_INFO, fields, kind="user")
        env = self._call_api("GET", USER_INFO, open_id=open_id, fields=fields)
        user = env.data.get("user")
        if not isinstance(user, dict):
            raise errors.TikTokMalformedResponse(
                "data.user is missing",
                endpoint=USER_INFO,
                open_id=open_id,
                http_status=env.http_status,
                log_id=env.log_id,
            )
        before = len(self.issues)
        clean = clean_record(user, fields, issues=self.issues, what=f"user {open_id}") or {}
        self._log_issues(before, USER_INFO, open_id, env.log_id)
        return clean

    def iter_video_pages(
        self,
        open_id: str,
        *,
        cursor: int | None = None,
        max_count: int = PAGE_SIZE,
        fields: Sequence[str] = VIDEO_FIELDS,
        max_empty_pages: int = 50,
    ) -> Iterator[VideoPage]:
        """Yield the account's videos page by page, newest first, from ``cursor`` (ms) if given.

        Videos repeated across a page boundary are dropped; a cursor that does not move back in
        time, or ``has_more`` staying true over ``max_empty_pages`` empty pages, ends the listing
        with :class:`TikTokMalformedResponse` instead of looping.
        """
        if not 1 <= max_count <= 20:
            raise errors.TikTokInvalidParams(
                f"max_count must be 1..20, got {max_count}", endpoint=VIDEO_LIST, open_id=open_id
            )
        if cursor is not None and (type(cursor) is not int or not 0 <= cursor <= INT64_MAX):
            raise errors.TikTokInvalidParams(
                f"cursor must be a Unix time in milliseconds, got {str(cursor)[:40]!r}",
                endpoint=VIDEO_LIST,
                open_id=open_id,
            )
        fields = list(dict.fromkeys(["id", "create_time", *fields]))
        self._check_fields(open_id, VIDEO_LIST, fields, kind="video")
        previous_ids: set[str] = set()
        empty_run = 0
        while True:
            body: dict[str, Any] = {"max_count": max_count}
            if cursor is not None:
                body["cursor"] = cursor
            env = self._call_api("POST", VIDEO_LIST, open_id=open_id, fields=fields, body=body)
            before = len(self.issues)
            page = parse_video_page(env, fields, endpoint=VIDEO_LIST, open_id=open_id, issues=self.issues)
            self._log_issues(before, VIDEO_LIST, open_id, env.log_id)
            page_ids: set[str] = set()
            unique = []
            for video in page.videos:
                if video["id"] in previous_ids or video["id"] in page_ids:
                    continue
                page_ids.add(video["id"])
                unique.append(video)
            ctx = {
                "endpoint": VIDEO_LIST,
                "open_id": open_id,
                "http_status": env.http_status,
                "log_id": env.log_id,
            }
            if page.has_more and cursor is not None and page.cursor is not None and page.cursor >= cursor:
                raise errors.TikTokMalformedResponse(
                    f"cursor did not advance ({cursor} -> {page.cursor}); stopping instead of looping. "
                    f"Pages up to cursor {cursor} are stored",
                    **ctx,
                )
            empty_run = empty_run + 1 if not page.videos else 0
            if page.has_more and empty_run > max_empty_pages:
                raise errors.TikTokMalformedResponse(
                    f"has_more stayed true over {empty_run} empty pages; stopping at cursor {page.cursor}",
                    **ctx,
                )
            yield replace(page, videos=unique)
            if not page.has_more:
                return
            previous_ids = page_ids or previous_ids
            cursor = page.cursor

    def query_videos(
        self, open_id: str, video_ids: Sequence[str], *, fields: Sequence[str] = VIDEO_FIELDS
    ) -> Iterator[tuple[list[str], list[dict[str, Any]]]]:
        """Yield ``(requested_ids, videos)`` per ``video/query`` call of at most 20 ids.

        Ids TikTok leaves out of an answer (deleted, private, another owner's) are simply absent.
        When an answer holds videos without a usable id, it does not show which requested ids are
        missing: ``requested_ids`` is then narrowed to the ids that did come back.
        """
        bad = [v for v in video_ids if not isinstance(v, str) or not VIDEO_ID.fullmatch(v)]
        if bad:
            raise errors.TikTokInvalidParams(
                f"video ids must be numeric strings; got {bad[:3]!r}", endpoint=VIDEO_QUERY, open_id=open_id
            )
        fields = list(dict.fromkeys(["id", *fields]))
        self._check_fields(open_id, VIDEO_QUERY, fields, kind="video")
        ids = list(dict.fromkeys(video_ids))
        for start in range(0, len(ids), QUERY_BATCH):
            batch = ids[start : start + QUERY_BATCH]
            env = self._call_api(
                "POST", VIDEO_QUERY, open_id=open_id, fields=fields, body={"filters": {"video_ids": batch}}
            )
            before = len(self.issues)
            answer = parse_video_query(
                env, fields, requested=batch, endpoint=VIDEO_QUERY, open_id=open_id, issues=self.issues
            )
            videos = answer.videos
            self._log_issues(before, VIDEO_QUERY, open_id, env.log_id)
            if answer.skipped:
                self.log.warning(
                    "%d videos of %s came back without a usable id [log_id=%s]; the %d requested videos "
                    "missing from the answer are not taken for removed",
                    answer.skipped,
                    open_id,
                    env.log_id,
                    len(batch) - len(videos),
                )
                batch = [v["id"] for v in videos]
            yield batch, videos

    def _log_issues(self, before: int, endpoint: str, open_id: str, log_id: str | None) -> None:
        for text in self.issues.items[before:]:
            self.log.warning("Sanitised answer of %s for account %s [log_id=%s]: %s", endpoint, open_id, log_id, text)


logging.getLogger("urllib3").setLevel(logging.WARNING)
