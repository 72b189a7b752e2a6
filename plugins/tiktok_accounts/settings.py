"""
The accounts UI's settings: the ``[tiktok_accounts]`` section of Airflow's configuration.

Each option may also be set as ``AIRFLOW__TIKTOK_ACCOUNTS__<OPTION>`` in the environment.

==============================  ==========================================================================
option                          meaning
==============================  ==========================================================================
``public_base_url``             The address users open Airflow at, e.g. ``https://airflow.example.com``
                                (with its path, if Airflow is served under one). The OAuth
                                ``redirect_uri`` is this + ``/tiktok-accounts/callback``: register
                                exactly that URL with TikTok. Default: ``[api] base_url``, else the
                                address the request came to (fine for ``make up``).
``authorize_url``               TikTok's authorize page. Default: ``https://www.tiktok.com/v2/auth/authorize/``
                                for the real API host, else ``<tiktok_default host>/v2/auth/authorize/``
                                (the simulator serves one).
``consent_warning_days``        Warn this many days before a refresh token runs out (default ``30,7,1``).
``disconnected_retention_days`` ``keep`` (default) keeps a disconnected account's rows; ``N`` purges them
                                N days after the disconnect (``0``: at once).
``request_timeout_seconds``     The longest one call to TikTok may take while a person waits on the page
                                (Disconnect's revoke): one attempt, no retries (default ``10``).
``pkce_challenge_encoding``     ``base64url`` (RFC 7636, default) or ``hex`` (what TikTok's desktop
                                guide describes) for the PKCE ``code_challenge``.
==============================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tiktok_warehouse.accounts_admin import CONFIG_SECTION, parse_retention_days, parse_warning_days

if TYPE_CHECKING:
    from fastapi import Request

TIKTOK_AUTHORIZE_URL = "https://www.tiktok.com/v2/auth/authorize/"
TIKTOK_API_HOSTS = frozenset({"open.tiktokapis.com", "open-api.tiktok.com"})
PKCE_ENCODINGS = ("base64url", "hex")


@dataclass(frozen=True)
class AccountsSettings:
    """The ``[tiktok_accounts]`` options, read once per request."""

    public_base_url: str | None
    authorize_url: str | None
    warning_days: tuple[int, ...]
    retention_days: int | None
    pkce_encoding: str
    request_timeout: float = 10.0

    @classmethod
    def from_airflow(cls) -> AccountsSettings:
        from airflow.configuration import conf

        def option(name: str) -> str:
            return (conf.get(CONFIG_SECTION, name, fallback="") or "").strip()

        encoding = option("pkce_challenge_encoding") or "base64url"
        if encoding not in PKCE_ENCODINGS:
            raise ValueError(
                f"[{CONFIG_SECTION}] pkce_challenge_encoding must be one of {', '.join(PKCE_ENCODINGS)}, "
                f"got {encoding!r}"
            )
        timeout = option("request_timeout_seconds") or "10"
        try:
            request_timeout = float(timeout)
        except ValueError:
            request_timeout = -1.0
        if not 0 < request_timeout <= 120:
            raise ValueError(f"[{CONFIG_SECTION}] request_timeout_seconds must be a number of seconds in (0, 120]")
        return cls(
            request_timeout=request_timeout,
            public_base_url=option("public_base_url")
            or (conf.get("api", "base_url", fallback="") or "").strip()
            or None,
            authorize_url=option("authorize_url") or None,
            warning_days=parse_warning_days(option("consent_warning_days")),
            retention_days=parse_retention_days(option("disconnected_retention_days")),
            pkce_encoding=encoding,
        )

    def base_url(self, request: Request, ui_root: str) -> str:
        """The public address of Airflow, without a trailing slash."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        return f"{request.url.scheme}://{request.url.netloc}{ui_root}".rstrip("/")

    def authorize_page(self, api_base_url: str) -> str:
        """TikTok's authorize page for an app whose API is at ``api_base_url``."""
        if self.authorize_url:
            return self.authorize_url
        parts = urlsplit(api_base_url)
        if (parts.hostname or "") in TIKTOK_API_HOSTS:
            return TIKTOK_AUTHORIZE_URL
        return f"{api_base_url.rstrip('/')}/v2/auth/authorize/"


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
