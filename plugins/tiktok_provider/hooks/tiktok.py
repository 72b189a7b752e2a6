"""TikTokDisplayHook: the Display API v2 and its OAuth token endpoint, for many accounts.

One hook serves one TikTok app (the ``tiktok`` connection: base URL as host, client key as login,
client secret as password, ``token_encryption_key`` and tuning in the extra) and every account
connected to it. A thin facade: the transport and retry policy are in :mod:`tiktok_provider.client`,
OAuth and token refresh in :mod:`tiktok_provider.auth`, paging in :mod:`tiktok_provider.paginator`,
parsing in :mod:`tiktok_provider.responses`. Account tokens live in the caller's token store
(``token_store=`` or ``token_store_factory=``, anything that follows
:class:`tiktok_provider.auth.TokenStore`); the hook builds none itself.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from airflow.sdk import BaseHook

from tiktok_provider import errors, paginator
from tiktok_provider.auth import OAUTH_REVOKE, OAUTH_TOKEN, AccessTokens, OAuthCalls
from tiktok_provider.client import RequestCounts, TikTokClient, new_session
from tiktok_provider.connection import TikTokConnectionConfig, mask
from tiktok_provider.fields import VIDEO_FIELDS, allowed_user_fields, missing_scopes
from tiktok_provider.paginator import PAGE_SIZE, QUERY_BATCH, VIDEO_LIST, VIDEO_QUERY, log_issues
from tiktok_provider.responses import Envelope, Issues, VideoPage, clean_record

if TYPE_CHECKING:
    from datetime import timedelta

    import requests

    from tiktok_provider.auth import AccountTokens, TokenGrant, TokenStore

__all__ = [
    "OAUTH_REVOKE",
    "OAUTH_TOKEN",
    "PAGE_SIZE",
    "QUERY_BATCH",
    "USER_INFO",
    "VIDEO_LIST",
    "VIDEO_QUERY",
    "TikTokConnectionConfig",
    "TikTokDisplayHook",
]

USER_INFO = "/v2/user/info/"


class TikTokDisplayHook(BaseHook):
    """
    Call the TikTok Display API on behalf of connected accounts.

    :param tiktok_conn_id: the ``tiktok`` connection of the TikTok app.
    :param token_store: where account tokens live (see :class:`tiktok_provider.auth.TokenStore`).
    :param token_store_factory: builds the token store from the connection's settings on first use,
        for callers that need the connection (its encryption key, its ``warehouse_conn_id``) first.
    :param sleep: how to wait between retries (tests pass a recorder instead of sleeping).
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
        token_store_factory: Callable[[TikTokConnectionConfig], TokenStore] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        priority: str = "normal",
    ) -> None:
        super().__init__()
        self._priority = priority
        self.tiktok_conn_id = tiktok_conn_id
        self._token_store = token_store
        self._token_store_factory = token_store_factory
        self._sleep = sleep
        self.counts = RequestCounts()
        self.issues = Issues()
        # One request in flight per hook: a prefetch thread may call while the task's thread writes.
        self._calling = threading.RLock()

    @property
    def priority(self) -> str:
        """This hook's share of the cluster's rate budget (:mod:`tiktok_provider.budget`).

        ``interactive`` (connecting, a new account's first sync), ``normal`` (snapshots, cover
        refresh) or ``bulk`` (whole-history backfills, which leave the connection's
        ``rate_budget_reserve`` free for the others). A caller may change it between calls.
        """
        return self._priority

    @priority.setter
    def priority(self, value: str) -> None:
        self._priority = value
        if "client" in self.__dict__:
            self.client.priority = value

    # -- composition ----------------------------------------------------------------------

    @cached_property
    def config(self) -> TikTokConnectionConfig:
        config = TikTokConnectionConfig.from_connection(self.get_connection(self.tiktok_conn_id))
        mask(config.client_secret)
        mask(config.token_encryption_key)
        redis_url = urlsplit(config.rate_budget_redis_url or "")
        # redis-py takes the password from the URL's user part or from a ?password= parameter.
        raw_query = [part.partition("=") for part in redis_url.query.split("&")]
        redis_passwords = [redis_url.password, *(value for key, _, value in raw_query if key == "password")]
        for password in filter(None, redis_passwords):  # a budget store's password: never in a log line
            mask(password)
            mask(unquote(password.replace("+", " ")))
            mask(unquote(password))
            mask(config.rate_budget_redis_url)
        return config

    def get_conn(self) -> requests.Session:
        """Return the HTTP session (built once; no network until a call is made)."""
        if not hasattr(self, "_session"):
            self._session = new_session()
        return self._session

    @cached_property
    def client(self) -> TikTokClient:
        return TikTokClient(
            self.config,
            session=self.get_conn(),
            counts=self.counts,
            sleep=self._sleep,
            log=self.log,
            priority=self.priority,
        )

    @cached_property
    def oauth(self) -> OAuthCalls:
        return OAuthCalls(self.client, log=self.log)

    @cached_property
    def tokens(self) -> AccessTokens:
        return AccessTokens(self.oauth, lambda: self.token_store, counts=self.counts, log=self.log)

    @property
    def token_store(self) -> TokenStore:
        if self._token_store is None:
            if self._token_store_factory is None:
                raise errors.TikTokConfigError(
                    "the hook has no token store: pass token_store= or token_store_factory= to TikTokDisplayHook",
                    endpoint=OAUTH_TOKEN,
                    conn_id=self.tiktok_conn_id,
                )
            self._token_store = self._token_store_factory(self.config)
        return self._token_store

    @property
    def calls(self) -> Counter[str]:
        return self.counts.calls

    @property
    def retries(self) -> Counter[str]:
        return self.counts.retries

    @property
    def refreshes(self) -> int:
        return self.counts.refreshes

    @property
    def _tokens(self) -> dict[str, AccountTokens]:
        """The tokens this hook last read or refreshed, per account."""
        return self.tokens.cache

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

    # -- OAuth and tokens (auth.py) -------------------------------------------------------

    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str | None = None) -> TokenGrant:
        """Exchange an authorization code for the account's first tokens."""
        return self.oauth.exchange_code(code, redirect_uri, code_verifier)

    def refresh_grant(
        self,
        refresh_token: str,
        *,
        open_id: str | None = None,
        deadline: float | None = None,
        cutoff: float | None = None,
    ) -> TokenGrant:
        """Trade a refresh token for new tokens (see :meth:`OAuthCalls.refresh_grant`)."""
        return self.oauth.refresh_grant(refresh_token, open_id=open_id, deadline=deadline, cutoff=cutoff)

    def revoke_token(self, token: str, *, open_id: str | None = None, within: float | None = None) -> None:
        """Revoke an access or refresh token (see :meth:`OAuthCalls.revoke_token`)."""
        self.oauth.revoke_token(token, open_id=open_id, within=within)

    def access_token(self, open_id: str, *, stale: str | None = None) -> str:
        """Return a usable access token for the account, refreshing it first when needed."""
        return self.tokens.access_token(open_id, stale=stale)

    @property
    def refresh_lease(self) -> timedelta:
        """The lease a refresh takes: the configured one, but always room for one full HTTP attempt."""
        return self.tokens.lease

    def scopes(self, open_id: str) -> frozenset[str]:
        return self.tokens.scopes(open_id)

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

    def _call_api(
        self, method: str, path: str, *, open_id: str, fields: Sequence[str], body: dict | None = None
    ) -> Envelope:
        """Call a data endpoint for one account with retries and one reactive token refresh."""
        params = {"fields": ",".join(fields)}
        with self._calling:
            token = self.access_token(open_id)
            try:
                return self.client.call(method, path, open_id, token, params, body)
            except errors.TikTokAccessTokenInvalid:
                self.log.info("Access token of %s rejected by %s; refreshing once", open_id, path)
                token = self.access_token(open_id, stale=token)
                return self.client.call(method, path, open_id, token, params, body)

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
        log_issues(self.log, self.issues, before, USER_INFO, open_id, env.log_id)
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
        """Yield the account's videos page by page, newest first (see :func:`paginator.iter_video_pages`)."""
        return paginator.iter_video_pages(
            self._call_api,
            self._check_fields,
            open_id,
            issues=self.issues,
            log=self.log,
            cursor=cursor,
            max_count=max_count,
            fields=fields,
            max_empty_pages=max_empty_pages,
        )

    def query_videos(
        self, open_id: str, video_ids: Sequence[str], *, fields: Sequence[str] = VIDEO_FIELDS
    ) -> Iterator[tuple[list[str], list[dict[str, Any]]]]:
        """Yield ``(requested_ids, videos)`` per ``video/query`` call of at most 20 ids (see the paginator)."""
        return paginator.query_videos(
            self._call_api, self._check_fields, open_id, video_ids, issues=self.issues, log=self.log, fields=fields
        )
