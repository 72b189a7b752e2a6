"""
Who may do what in the accounts UI, and the CSRF and browser-binding cookies.

Users are Airflow's: every route but the webhook depends on Airflow's own ``get_user`` (the UI's
``_token`` JWT cookie, or an ``Authorization: Bearer`` token), so anonymous callers get 401.
Permissions come from Airflow's auth manager:

- **read** (the page, ``/api/accounts``): reading the runs of ``tiktok_profile_snapshot``
  (every Airflow role can);
- **manage** (connect, reconnect, disconnect, purge): editing the ``tiktok_default`` connection --
  these actions create and destroy the credentials that connection's app holds;
- **connect** also needs triggering runs of the two DAGs it starts.

CSRF: writes are POST forms carrying a token bound to the user and to a random cookie
(``tiktok_accounts_csrf``: HttpOnly, SameSite=Strict, only sent to ``/tiktok-accounts``); the
token is an HMAC of both under a key derived from ``[api_auth] jwt_secret`` and ``[api] secret_key``
(Celery workers hold the second, for log serving, but not the first). A cross-site form can send
neither, and a request whose ``Origin`` names another host is refused too. Requests authenticated
by an ``Authorization: Bearer`` header need no token: a browser never adds that header on its own.

The connect flow binds its OAuth state to the browser with another random cookie
(``tiktok_accounts_oauth``, SameSite=Lax so that it comes back with TikTok's redirect).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, Response

from tiktok_accounts import MOUNT

if TYPE_CHECKING:
    from collections.abc import Iterable

CSRF_COOKIE = "tiktok_accounts_csrf"
BINDING_COOKIE = "tiktok_accounts_oauth"
CSRF_FIELD = "csrf_token"
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{32,100}$")


@cache
def _key() -> bytes:
    """A key for this app's HMACs, derived from the API server's secrets (random if neither is set).

    ``[api_auth] jwt_secret`` is only the API server's (and the scheduler's): workers also hold
    ``[api] secret_key``, so that one alone would let code on a worker forge this app's tokens.
    """
    from airflow.configuration import conf

    parts = [conf.get("api_auth", "jwt_secret", fallback="") or "", conf.get("api", "secret_key", fallback="") or ""]
    secret = "\0".join(parts) if any(parts) else secrets.token_urlsafe(64)
    return hmac.new(secret.encode(), b"tiktok_accounts", hashlib.sha256).digest()


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def can_read(user: Any, dag_id: str) -> bool:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return _auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user
    )


def can_manage(user: Any, conn_id: str) -> bool:
    from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails

    return _auth_manager().is_authorized_connection(method="PUT", details=ConnectionDetails(conn_id=conn_id), user=user)


def can_trigger(user: Any, dag_ids: Iterable[str]) -> bool:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    manager = _auth_manager()
    return all(
        manager.is_authorized_dag(
            method="POST", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user
        )
        for dag_id in dag_ids
    )


def forbid_unless(allowed: bool, what: str) -> None:
    if not allowed:
        raise HTTPException(403, f"Forbidden: your Airflow role may not {what}.")


def bearer_authenticated(request: Request) -> bool:
    return request.headers.get("authorization", "").lower().startswith("bearer ")


def _secure(request: Request, public_base_url: str) -> bool:
    return request.url.scheme == "https" or public_base_url.startswith("https://")


def _cookie_path(request: Request) -> str:
    root = request.scope.get("root_path", "") or ""
    return root if root.endswith(MOUNT) else MOUNT


def _valid_cookie(value: str | None) -> str | None:
    return value if value and _COOKIE_VALUE.match(value) else None


def csrf_cookie(request: Request) -> tuple[str, bool]:
    """Return this browser's CSRF cookie value, and whether it is new (then set it with :func:`set_cookies`)."""
    cookie = _valid_cookie(request.cookies.get(CSRF_COOKIE))
    return (cookie, False) if cookie else (secrets.token_urlsafe(32), True)


def csrf_token(user: Any, cookie: str) -> str:
    """The form token of ``user`` in the browser holding ``cookie``."""
    return _token(user, cookie)


def _token(user: Any, cookie: str) -> str:
    return hmac.new(_key(), f"csrf|{user.get_id()}|{cookie}".encode(), hashlib.sha256).hexdigest()


def check_csrf(request: Request, user: Any, form_token: str | None, public_base_url: str) -> None:
    """Refuse (403) a cookie-authenticated write without a valid token or from another origin."""
    if bearer_authenticated(request):
        return
    origin = request.headers.get("origin")
    ours = {request.headers.get("host"), urlsplit(public_base_url).netloc}
    if origin is not None and (origin == "null" or urlsplit(origin).netloc not in ours):
        raise HTTPException(403, "Forbidden: the request came from another site (Origin does not match).")
    cookie = _valid_cookie(request.cookies.get(CSRF_COOKIE))
    if cookie is None or not form_token or not hmac.compare_digest(_token(user, cookie), form_token):
        raise HTTPException(
            403, "Forbidden: the form's CSRF token is missing or does not match. Reload the accounts page and retry."
        )


def set_cookie(request: Request, response: Response, name: str, value: str, public_base_url: str, **kw: Any) -> None:
    """Set one of our cookies: HttpOnly, only sent to this app's path, Secure when served over https."""
    response.set_cookie(
        name, value, httponly=True, secure=_secure(request, public_base_url), path=_cookie_path(request), **kw
    )


def binding_cookie(request: Request) -> str:
    """This browser's connect binding: the existing cookie's value, or a new one to set (SameSite=Lax)."""
    return _valid_cookie(request.cookies.get(BINDING_COOKIE)) or secrets.token_urlsafe(32)


def request_binding(request: Request) -> str | None:
    return _valid_cookie(request.cookies.get(BINDING_COOKIE))


#: How long the signed notice of a write (the banner after the redirect) stays valid.
NOTICE_MAX_AGE = 600


def _notice_mac(user: Any, fields: tuple[str, ...], issued: str) -> str:
    message = "|".join(("notice", str(user.get_id()), issued, *fields)).encode()
    return hmac.new(_key(), message, hashlib.sha256).hexdigest()[:32]


def sign_notice(user: Any, fields: tuple[str, ...], now: float) -> dict[str, str]:
    """The query values that make a banner showable: when, and an HMAC over it, the user and ``fields``.

    The banner after a write is carried in the redirect's address; without this, any link could
    make the page announce a purge or disconnect that never happened.
    """
    issued = str(int(now))
    return {"t": issued, "sig": _notice_mac(user, fields, issued)}


def notice_is_signed(user: Any, fields: tuple[str, ...], issued: str | None, sig: str | None, now: float) -> bool:
    """Whether ``sig`` signs ``fields`` for ``user`` and was issued in the last :data:`NOTICE_MAX_AGE` s."""
    if not issued or not sig or not issued.isascii() or not issued.isdigit() or len(issued) > 12:
        return False
    if not 0 <= now - int(issued) <= NOTICE_MAX_AGE:
        return False
    return hmac.compare_digest(_notice_mac(user, fields, issued), sig)
