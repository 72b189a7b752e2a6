"""Serve TikTok's authorize (consent) page, ``/v2/auth/authorize/``, so a connect flow runs in a browser.

``GET /v2/auth/authorize/?client_key=&scope=&response_type=code&redirect_uri=&state=
[&code_challenge=&code_challenge_method=S256]`` shows a page where the "creator" picks one of the
simulator's accounts, may untick scopes, and approves or denies. The form posts back to the same
path, and the browser is sent (302) to ``redirect_uri`` with ``code``, ``scopes`` and ``state``, or
with ``error=access_denied``, ``error_description`` and ``state``.

Checks, as TikTok makes them: an unknown ``client_key`` or an unusable ``redirect_uri`` (not an
absolute http(s) URL, a fragment, 512 characters or more) end on an error page here, never in a
redirect to that URI; a bad ``response_type``, ``scope`` or PKCE method is sent back to the
``redirect_uri`` as ``error=...``. Any absolute http(s) ``redirect_uri`` is accepted (TikTok only
accepts those registered for the app). The code is minted as ``POST /_sim/codes`` would: single-use,
``code_ttl`` long, with the PKCE challenge. Every value shown on the page is HTML-escaped.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from tiktok_sim.oauth import parse_scopes
from tiktok_sim.state import Simulator
from tiktok_sim.stats import RequestRecord

AUTHORIZE_PATH = "/v2/auth/authorize/"
MAX_REDIRECT_URI = 512
PARAMS = ("client_key", "scope", "response_type", "redirect_uri", "state", "code_challenge", "code_challenge_method")


class _PageError(Exception):
    """Shown on our own page: the redirect_uri cannot be trusted with an answer."""


class _RedirectError(Exception):
    """Sent back to the redirect_uri as ``error`` and ``error_description``."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _redirect_to(redirect_uri: str, params: dict[str, str]) -> RedirectResponse:
    separator = "&" if urlsplit(redirect_uri).query else "?"
    return RedirectResponse(f"{redirect_uri}{separator}{urlencode(params)}", status_code=302)


def _check(sim: Simulator, params: dict[str, str]) -> tuple[str, ...]:
    """Validate an authorization request; return the requested scopes."""
    if params.get("client_key") != sim.config.client_key:
        raise _PageError("client_key is missing or unknown: this app is not registered.")
    redirect_uri = params.get("redirect_uri", "")
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment or "#" in redirect_uri:
        raise _PageError("redirect_uri must be an absolute http(s) URL without a fragment.")
    if len(redirect_uri) >= MAX_REDIRECT_URI:
        raise _PageError(f"redirect_uri must be shorter than {MAX_REDIRECT_URI} characters.")
    if params.get("response_type") != "code":
        raise _RedirectError("unsupported_response_type", "response_type must be code.")
    try:
        scopes = parse_scopes(params.get("scope", ""))
    except ValueError as exc:
        raise _RedirectError("invalid_scope", str(exc)) from None
    if params.get("code_challenge") and params.get("code_challenge_method", "S256") not in ("S256", "plain"):
        raise _RedirectError("invalid_request", "code_challenge_method must be S256 or plain.")
    return scopes


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 36rem; margin: 3rem auto; color: #161823; }}
h1 {{ font-size: 1.4rem; }} label {{ display: block; margin: .3rem 0; }}
.buttons button {{ font-size: 1rem; padding: .5rem 1.2rem; margin-right: .5rem; }}
.approve {{ background: #fe2c55; color: white; border: none; border-radius: 4px; }}
.note {{ color: #555; font-size: .85rem; }}
</style></head><body>{body}</body></html>"""
    headers = {
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http: https:",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    return HTMLResponse(document, status_code=status, headers=headers)


def _consent_page(sim: Simulator, params: dict[str, str], scopes: tuple[str, ...]) -> HTMLResponse:
    hidden = "".join(
        f'<input type="hidden" name="{_e(name)}" value="{_e(params[name])}">' for name in PARAMS if name in params
    )
    with sim.lock:
        choices = [(a.open_id, a.profile.display_name, a.profile.username) for a in sim.accounts.accounts]
    accounts = (
        "".join(
            f'<label><input type="radio" name="open_id" value="{_e(open_id)}" required{" checked" if i == 0 else ""}> '
            f"{_e(name)} <span class='note'>@{_e(username)}</span></label>"
            for i, (open_id, name, username) in enumerate(choices)
        )
        or "<p>The simulator has no accounts: create one with POST /_sim/accounts.</p>"
    )
    scope_boxes = "".join(
        f'<label><input type="checkbox" name="granted_scope" value="{_e(scope)}" checked> {_e(scope)}</label>'
        for scope in scopes
    )
    body = f"""<h1>Authorize this app</h1>
<p>The app <strong>{_e(params["client_key"])}</strong> wants to access your TikTok account.</p>
<form method="post" action="{AUTHORIZE_PATH}">{hidden}
<fieldset><legend>Log in as</legend>{accounts}</fieldset>
<fieldset><legend>Allow</legend>{scope_boxes}</fieldset>
<p class="note">You will be sent back to {_e(params["redirect_uri"])}</p>
<p class="buttons"><button class="approve" type="submit" name="decision" value="approve">Authorize</button>
<button type="submit" name="decision" value="deny" formnovalidate>Cancel</button></p>
</form>"""
    return _page("TikTok - Authorize", body)


def build_authorize_router(sim: Simulator) -> APIRouter:
    """Return the authorize page routes bound to ``sim``."""
    router = APIRouter()

    def record(request: Request, status: int, error: str | None = None, open_id: str | None = None) -> None:
        entry = RequestRecord(method=request.method, path=request.url.path, endpoint="oauth_authorize")
        entry.status, entry.error_code, entry.open_id = status, error, open_id
        with sim.lock:
            entry.sim_time = sim.now()
            sim.stats.record(entry)

    def checked(request: Request, params: dict[str, str]) -> Any:
        """The requested scopes, or the page/redirect TikTok answers a bad authorize request with."""
        try:
            return _check(sim, params)
        except _PageError as exc:
            record(request, 400, "invalid_request")
            return _page("TikTok - Error", f"<h1>Something went wrong</h1><p>{_e(exc)}</p>", 400)
        except _RedirectError as exc:
            record(request, 302, exc.error)
            return _redirect_to(
                params["redirect_uri"],
                {"error": exc.error, "error_description": exc.description, "state": params.get("state", "")},
            )

    @router.get(AUTHORIZE_PATH, include_in_schema=False)
    def authorize_page(request: Request) -> Response:
        params = {name: request.query_params[name] for name in PARAMS if name in request.query_params}
        scopes = checked(request, params)
        if isinstance(scopes, Response):
            return scopes
        record(request, 200)
        return _consent_page(sim, params, scopes)

    @router.post(AUTHORIZE_PATH, include_in_schema=False)
    async def authorize_decision(request: Request) -> Response:
        parsed = parse_qs((await request.body()).decode(errors="replace"))
        form = {name: values[0] for name, values in parsed.items()}
        granted = parsed.get("granted_scope", [])
        params = {name: form[name] for name in PARAMS if name in form}
        requested = checked(request, params)
        if isinstance(requested, Response):
            return requested
        back = {"state": params.get("state", "")}
        if form.get("decision") != "approve":
            record(request, 302, "access_denied")
            return _redirect_to(
                params["redirect_uri"],
                {"error": "access_denied", "error_description": "The user denied the authorization.", **back},
            )
        scopes = tuple(scope for scope in requested if scope in granted)
        open_id = form.get("open_id", "")
        with sim.lock:
            known = sim.accounts.get(open_id) is not None
            if known and scopes:
                code = sim.tokens.mint_code(
                    open_id=open_id,
                    scopes=scopes,
                    redirect_uri=params["redirect_uri"],
                    expires_at=sim.now() + sim.config.code_ttl,
                    code_challenge=params.get("code_challenge") or None,
                    code_challenge_method=params.get("code_challenge_method") or "S256",
                )
        if not known:
            record(request, 400, "invalid_request")
            return _page("TikTok - Error", "<h1>Something went wrong</h1><p>Choose an account.</p>", 400)
        if not scopes:
            record(request, 302, "invalid_scope", open_id)
            return _redirect_to(
                params["redirect_uri"], {"error": "invalid_scope", "error_description": "No scope was allowed.", **back}
            )
        record(request, 302, None, open_id)
        return _redirect_to(params["redirect_uri"], {"code": code, "scopes": ",".join(scopes), **back})

    return router
