"""
The accounts UI's routes, mounted by the api-server at ``/tiktok-accounts``.

=======  ==================================  =================================================================
method   path                                what (who)
=======  ==================================  =================================================================
GET      ``/``                               the accounts page (read); ``?days=30|90|365`` for the chart
GET      ``/api/accounts``                   the same as JSON, never a token (read)
GET      ``/icon.svg``                       the navigation icon (any logged-in user)
POST     ``/connect``                        start connecting: ``scope`` list, ``open_id`` to reconnect (connect)
GET      ``/callback``                       the OAuth ``redirect_uri``: TikTok sends the browser back (connect)
POST     ``/accounts/{open_id}/disconnect``  revoke at TikTok, mark disconnected (manage)
POST     ``/accounts/{open_id}/purge``       delete a disconnected account's rows; ``confirm`` = open_id (manage)
POST     ``/webhook``                        TikTok's webhooks (``authorization.removed``); signed, no login
=======  ==================================  =================================================================

*read*: reading the TikTok DAGs' runs; *manage*: editing the ``tiktok_default`` connection;
*connect*: manage, and triggering the two DAGs a connect starts.

Writes answer 303 to the page with a notice (so a reload does not repeat them) or end on a page
that says what went wrong and what to do next. Pages carry a strict Content-Security-Policy (only
this response's nonced script and style, framing only by Airflow's own origin) and
``Referrer-Policy: same-origin``, so the code and state in the callback's address never leak to
another host (``no-referrer`` would make browsers send ``Origin: null`` with our own form posts).
The UI shows the page in its plugin frame (``/plugin/tiktok-accounts``); it also works as a page
of its own.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import traceback
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from tiktok_accounts import MOUNT
from tiktok_accounts import security as sec
from tiktok_accounts.oauth import chosen_scopes
from tiktok_accounts.pages import CHART_RANGES, PageContext, accounts_page, e, leave_for, message_page
from tiktok_accounts.service import (
    FIRST_RUN_DAGS,
    PROFILE_DAG,
    STATE_MAX_AGE,
    Backend,
    UserFacingError,
    account_views,
    archived_blob,
    disconnect,
    finish_connect,
    handle_webhook,
    now_utc,
    purge,
    start_connect,
    valid_open_id,
)
from tiktok_accounts.settings import AccountsSettings, origin
from tiktok_accounts.webhook import MAX_BODY_BYTES, SIGNATURE_HEADER, WebhookRejected, verify_signature
from tiktok_pipeline.common import TIKTOK_CONN_ID

log = logging.getLogger(__name__)

ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#8c97a6" stroke-width="2.2">'
    '<path d="M9 12a4 4 0 1 0 4 4V4a5 5 0 0 0 5 5"/></svg>'
)
NOTICES = {
    "connected": ("ok", "Connected {name}. Its first profile snapshot and video backfill have started."),
    "disconnected": (
        "ok",
        "Disconnected {name}: its authorization was revoked at TikTok. Its rows are kept until you purge them.",
    ),
    "already": ("ok", "{name} was already disconnected."),
    "purged": ("ok", "Purged {name}: every row of the account was deleted."),
    "gone": ("ok", "{name} was already purged: none of its rows are left."),
}
WARNINGS = {
    "other": (
        "TikTok authorized another account than the one you meant to reconnect; that one still needs reconnecting."
    ),
    "profile": "Its profile could not be fetched yet; the first snapshot will fill it in.",
    "runs": "Its first runs could not be started: trigger tiktok_profile_snapshot and tiktok_video_backfill yourself.",
    "paused": "A TikTok DAG is paused, so its first run waits: unpause it to let it run.",
}


def _get_user() -> Any:
    from airflow.api_fastapi.core_api.security import get_user

    return get_user


CurrentUser = Depends(_get_user())


def _roots(request: Request) -> tuple[str, str]:
    """This app's path and the Airflow UI's path (both without a trailing slash)."""
    root = (request.scope.get("root_path") or "").rstrip("/")
    if not root.endswith(MOUNT):
        root = f"{root}{MOUNT}"
    return root, root[: -len(MOUNT)]


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "") and not request.url.path.endswith("/webhook")


def _html(content: str, nonce: str, *, status: int = 200, img: str = "", forms: str = "") -> HTMLResponse:
    # Framed only by Airflow's own UI (same origin); scripts and styles only by this response's nonce.
    policy = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self' https: {img}; "
        f"form-action 'self' {forms}; frame-ancestors 'self'; base-uri 'none'"
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "SAMEORIGIN",
        "X-Content-Type-Options": "nosniff",
        # Not no-referrer: with it, browsers send "Origin: null" on our own form posts.
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }
    return HTMLResponse(content, status_code=status, headers=headers)


def _context(request: Request, user: Any, **kw: Any) -> PageContext:
    root, ui = _roots(request)
    name = user.get_name() if user is not None else ""
    return PageContext(root=root, ui=ui, user_name=name, nonce=secrets.token_urlsafe(16), now=now_utc(), **kw)


def _notice_query(user: Any, done: str, account: str, warn: str = "") -> str:
    """The banner's query for the page after a write, signed for this user (a link cannot fake it)."""
    fields = (done, account, warn)
    signed = sec.sign_notice(user, fields, time.time())
    return urlencode({"done": done, "account": account, "warn": warn, **signed})


def _redirect(request: Request, user: Any, done: str, account: str) -> RedirectResponse:
    root, _ = _roots(request)
    return RedirectResponse(f"{root}/?{_notice_query(user, done, account)}", status_code=303)


#: Query values of the OAuth callback kept out of the api-server's access log (single-use, but secret).
REDACTED_PARAMS = frozenset({"code", "state"})
OUR_CODE = ("tiktok_accounts", "tiktok_warehouse", "tiktok_provider", "tiktok_pipeline")
_ACCOUNT_IN_PATH = re.compile(r"/accounts/([^/]{1,200})/")


def _redact_query(query: bytes) -> bytes:
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return urlencode([(k, "***" if k in REDACTED_PARAMS else v) for k, v in pairs]).encode("latin-1")


def _step(exc: BaseException) -> str:
    """Where in our code ``exc`` was raised: the innermost frame of this project's packages."""
    found = "unknown step"
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        module = frame.f_globals.get("__name__", "")
        if module.startswith(OUR_CODE):
            found = f"{frame.f_code.co_name} ({module}:{lineno})"
    return found


def _read_only(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        for error in (seen, getattr(seen, "orig", None)):
            # read_only_sql_transaction: psycopg 3 says sqlstate, psycopg2 pgcode
            if "25006" in (getattr(error, "sqlstate", None), getattr(error, "pgcode", None)):
                return True
        seen = seen.__cause__ or seen.__context__
    return False


class _Guard:
    """The app's outermost layer: an error page for what nothing else handled, and no code in the access log.

    - An unexpected exception (a bug, the warehouse going away, ...) ends on the usual error page (or
      JSON) instead of a bare ``Internal Server Error``, and is logged with the account, the step and
      the exception's type -- not its message, which may quote SQL parameters.
    - The OAuth callback's ``code`` and ``state`` stay out of the api-server's access log: Airflow's
      access-log middleware reads the (shared) ASGI scope's query after the app answered, so it is
      redacted in place once the request is handled. (``mask_secret`` would not do: it would
      grow the masker by two patterns per request, anonymous ones included.)
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                raise
            response = _unexpected(Request(scope), exc)
            await response(scope, receive, send)
        finally:
            if scope.get("query_string") and str(scope.get("path", "")).endswith("/callback"):
                scope["query_string"] = _redact_query(scope["query_string"])


def _unexpected(request: Request, exc: Exception) -> Response:
    match = _ACCOUNT_IN_PATH.search(request.url.path)
    account = match.group(1) if match and valid_open_id_or_none(match.group(1)) else None
    step = _step(exc)
    log.error(
        "TikTok accounts: %s %s failed unexpectedly [account=%s, step=%s]: %s",
        request.method,
        request.url.path,
        account or "none",
        step,
        type(exc).__name__,
    )
    what = f"TikTok account {account}" if account else "This request"
    if _read_only(exc):
        title, status = "The warehouse is read-only for Airflow", 503
        first = f"{what} stopped: the warehouse refused a write (it is read-only: a standby, or set read-only)."
    else:
        title, status = "Something went wrong", 500
        first = f"{what} stopped on an unexpected error ({type(exc).__name__}) in {step}."
    paragraphs = [
        first,
        "It is in the api-server's log with the account and the step. What was done before it stands: "
        "reload the TikTok accounts page to see the account's state, then retry.",
    ]
    if not _wants_html(request):
        return JSONResponse({"detail": " ".join(paragraphs), "title": title}, status_code=status)
    ctx = _context(request, None)
    return _html(message_page(ctx, title, paragraphs), ctx.nonce, status=status)


def create_app() -> FastAPI:
    """Return the accounts UI's FastAPI app."""
    app = FastAPI(title="TikTok accounts", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_Guard)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if not _wants_html(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        ctx = _context(request, None)
        paragraphs = [str(exc.detail)]
        body = ""
        if exc.status_code == 401:
            from airflow.api_fastapi.app import get_auth_manager

            # Back to where the user was (e.g. TikTok's redirect to the callback, whose code is still fresh).
            here = f"{request.url.path}?{request.url.query}" if request.url.query else request.url.path
            login = get_auth_manager().get_url_login(next_url=here if request.method == "GET" else f"{ctx.root}/")
            paragraphs = ["You are not logged in to Airflow (or your session expired)."]
            body = f'<p><a href="{e(login)}">Log in to Airflow</a>, then open TikTok accounts again.</p>'
        title = "Not allowed" if exc.status_code == 403 else "TikTok accounts"
        return _html(message_page(ctx, title, paragraphs, extra=body), ctx.nonce, status=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's default answer echoes the input; ours names the fields only.
        fields = sorted({".".join(str(p) for p in error.get("loc", ())[1:]) for error in exc.errors()})
        return await user_facing_error(
            request, UserFacingError("Bad request", f"These values are not valid: {', '.join(fields)}.")
        )

    @app.exception_handler(UserFacingError)
    async def user_facing_error(request: Request, exc: UserFacingError) -> Response:
        # On-call finds what the user saw (TikTok's log_id included) in the api-server's log.
        # The paragraphs are our texts: names, codes, log_ids, never a token or the code.
        log.warning(
            "TikTok accounts: %s %s ended on %d %r: %s",
            request.method,
            request.url.path,
            exc.status,
            exc.title,
            " ".join(exc.paragraphs),
        )
        if not _wants_html(request):
            return JSONResponse({"detail": " ".join(exc.paragraphs), "title": exc.title}, status_code=exc.status)
        ctx = _context(request, None)
        return _html(message_page(ctx, exc.title, exc.paragraphs), ctx.nonce, status=exc.status)

    # -- reading --------------------------------------------------------------------------------

    @app.get("/")
    def page(
        request: Request,
        user: Any = CurrentUser,
        days: str | None = None,
        done: str | None = None,
        account: str | None = None,
        warn: str | None = None,
        t: str | None = None,
        sig: str | None = None,
    ) -> Response:
        sec.forbid_unless(sec.can_read(user, PROFILE_DAG), "read the runs of the TikTok DAGs")
        settings = AccountsSettings.from_airflow()
        backend = Backend.load()
        _, ui = _roots(request)
        base = settings.base_url(request, ui)
        cookie, new_cookie = sec.csrf_cookie(request)
        manage = sec.can_manage(user, TIKTOK_CONN_ID)
        ctx = _context(
            request,
            user,
            csrf=sec.csrf_token(user, cookie),
            can_manage=manage,
            can_connect=manage and sec.can_trigger(user, FIRST_RUN_DAGS),
        )
        chart_days = int(days) if days in {str(r) for r in CHART_RANGES} else CHART_RANGES[0]
        views = account_views(backend, settings, days=chart_days, now=ctx.now, ui=ui)
        authorize = settings.authorize_page(backend.config.base_url)
        content = accounts_page(
            ctx,
            views,
            days=chart_days,
            redirect_uri=f"{base}{MOUNT}/callback",
            authorize_host=urlsplit(authorize).netloc,
            notice=_notice(done, account, warn, views)
            if sec.notice_is_signed(user, (done or "", account or "", warn or ""), t, sig, time.time())
            else None,
        )
        response = _html(content, ctx.nonce, img=origin(backend.config.base_url), forms=origin(authorize))
        if new_cookie:
            sec.set_cookie(request, response, sec.CSRF_COOKIE, cookie, base, samesite="strict")
        return response

    @app.get("/api/accounts")
    def accounts_json(request: Request, user: Any = CurrentUser) -> dict[str, Any]:
        sec.forbid_unless(sec.can_read(user, PROFILE_DAG), "read the runs of the TikTok DAGs")
        settings = AccountsSettings.from_airflow()
        _, ui = _roots(request)
        views = account_views(Backend.load(), settings, days=30, now=now_utc(), ui=ui)
        return {
            "accounts": [
                {
                    **{k: v for k, v in asdict(view.health).items() if k != "scopes"},
                    "scopes": sorted(view.health.scopes),
                    "effective_status": view.effective_status,
                    "consent_days_left": view.consent_days_left,
                    "consent_warning_days": view.consent_warning,
                    "follower_growth_30d": view.growth,
                    "latest_tasks": [asdict(link) for link in view.links],
                }
                for view in views
            ]
        }

    @app.get("/covers/{sha256}")
    def archived_cover(sha256: str, user: Any = CurrentUser) -> Response:
        """An archived cover, by content hash: only blobs the warehouse lists, never a path from the request."""
        from airflow.sdk import ObjectStoragePath

        from tiktok_pipeline.archive import archive_settings

        sec.forbid_unless(sec.can_read(user, PROFILE_DAG), "read the runs of the TikTok DAGs")
        blob = archived_blob(Backend.load().admin.engine, sha256)
        if blob is None or not blob[1].startswith("image/"):
            raise HTTPException(status_code=404, detail="No archived image with that hash")
        path, content_type = blob
        body = ObjectStoragePath(path, conn_id=archive_settings().conn_id).read_bytes()
        headers = {
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "X-Content-Type-Options": "nosniff",
            # Content-addressed: the bytes behind a hash never change.
            "Cache-Control": "private, max-age=86400, immutable",
        }
        return Response(body, media_type=content_type, headers=headers)

    @app.get("/icon.svg")
    def icon(user: Any = CurrentUser) -> Response:
        return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=86400"})

    # -- connect --------------------------------------------------------------------------------

    def require_connect(user: Any) -> None:
        sec.forbid_unless(
            sec.can_manage(user, TIKTOK_CONN_ID) and sec.can_trigger(user, FIRST_RUN_DAGS),
            "connect accounts (it needs editing the tiktok_default connection and triggering the TikTok DAGs)",
        )

    @app.post("/connect")
    async def connect(request: Request, user: Any = CurrentUser) -> Response:
        require_connect(user)
        form = await request.form()
        settings = AccountsSettings.from_airflow()
        _, ui = _roots(request)
        base = settings.base_url(request, ui)
        sec.check_csrf(request, user, _field(form, sec.CSRF_FIELD), base)
        try:
            scopes = chosen_scopes([str(s) for s in form.getlist("scope")])
        except ValueError as exc:
            raise UserFacingError("Unknown scope", str(exc)) from None
        expected = _field(form, "open_id")
        expected = valid_open_id(expected) if expected else None
        backend = await run_in_threadpool(Backend.load)
        binding = sec.binding_cookie(request)
        target = await run_in_threadpool(
            lambda: start_connect(
                backend,
                settings,
                user_id=user.get_id(),
                binding=binding,
                scopes=scopes,
                expected_open_id=expected,
                redirect_uri=f"{base}{MOUNT}/callback",
                now=now_utc(),
            )
        )
        if request.headers.get("sec-fetch-dest") == "iframe":
            # Inside the Airflow UI's frame: TikTok's page must open in the top window.
            ctx = _context(request, user)
            page = leave_for(ctx, target, "TikTok's consent page")
            response: Response = _html(page, ctx.nonce, forms=origin(target))
        else:
            response = RedirectResponse(target, status_code=303)
        sec.set_cookie(request, response, sec.BINDING_COOKIE, binding, base, samesite="lax", max_age=STATE_MAX_AGE)
        return response

    @app.get("/callback")
    def callback(request: Request, user: Any = CurrentUser) -> Response:
        require_connect(user)
        params = {
            name: request.query_params[name][:4096]
            for name in ("code", "state", "error", "error_description", "scopes")
            if name in request.query_params
        }
        result = finish_connect(
            Backend.load(), params=params, binding=sec.request_binding(request), user=user, now=now_utc()
        )
        warnings = list(dict.fromkeys(result.problems))
        if result.expected_open_id and result.expected_open_id != result.open_id:
            warnings.insert(0, "other")
        # Back into the Airflow UI, with the accounts page in its frame.
        ctx = _context(request, user)
        query = _notice_query(user, "connected", result.open_id, ",".join(warnings))
        return RedirectResponse(f"{ctx.embedded}?{query}", status_code=303)

    # -- disconnect and purge -------------------------------------------------------------------

    async def manage_form(request: Request, user: Any) -> Any:
        sec.forbid_unless(
            sec.can_manage(user, TIKTOK_CONN_ID), "manage TikTok accounts (edit the tiktok_default connection)"
        )
        form = await request.form()
        _, ui = _roots(request)
        sec.check_csrf(
            request, user, _field(form, sec.CSRF_FIELD), AccountsSettings.from_airflow().base_url(request, ui)
        )
        return form

    @app.post("/accounts/{open_id}/disconnect")
    async def disconnect_account(open_id: str, request: Request, user: Any = CurrentUser) -> Response:
        await manage_form(request, user)
        open_id = valid_open_id(open_id)
        backend = await run_in_threadpool(Backend.load)
        timeout = AccountsSettings.from_airflow().request_timeout
        result = await run_in_threadpool(
            lambda: disconnect(backend, open_id, user=user, now=now_utc(), timeout=timeout)
        )
        return _redirect(request, user, "already" if result == "already" else "disconnected", open_id)

    @app.post("/accounts/{open_id}/purge")
    async def purge_account(open_id: str, request: Request, user: Any = CurrentUser) -> Response:
        form = await manage_form(request, user)
        open_id = valid_open_id(open_id)
        backend = await run_in_threadpool(Backend.load)
        purged = await run_in_threadpool(lambda: purge(backend, open_id, confirm=_field(form, "confirm")))
        if purged is None:
            return _redirect(request, user, "gone", open_id)
        log.info("User %s purged TikTok account %s", user.get_name(), open_id)
        return _redirect(request, user, "purged", open_id)

    # -- TikTok's webhook -----------------------------------------------------------------------

    @app.post("/webhook")
    async def webhook(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return JSONResponse({"detail": "body too large"}, status_code=413)
        signature = request.headers.get(SIGNATURE_HEADER)
        try:
            # Only the app's connection (no warehouse) until the delivery is known to be TikTok's.
            config = await run_in_threadpool(Backend.load_config)
        except UserFacingError as exc:
            log.error("Cannot check a TikTok webhook delivery: %s", " ".join(exc.paragraphs))
            return JSONResponse({"detail": "the webhook is not available"}, status_code=503)
        try:
            verify_signature(signature, body, config.client_secret, now=now_utc().timestamp())
        except WebhookRejected as exc:
            log.warning("Refused a TikTok webhook delivery (%d): %s", exc.status, exc.reason)
            return JSONResponse({"detail": exc.reason}, status_code=exc.status)
        try:
            backend = await run_in_threadpool(Backend.load)
            settings = AccountsSettings.from_airflow()
            result = await run_in_threadpool(
                lambda: handle_webhook(backend, settings, signature=signature, body=body, now=now_utc())
            )
        except WebhookRejected as exc:
            log.warning("Refused a TikTok webhook delivery (%d): %s", exc.status, exc.reason)
            return JSONResponse({"detail": exc.reason}, status_code=exc.status)
        return JSONResponse(result)

    return app


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else None


def _notice(done: str | None, account: str | None, warn: str | None, views: Any) -> tuple[str, str] | None:
    """The banner after a write, from fixed texts only (the account's name is looked up, then escaped)."""
    if done not in NOTICES:
        return None
    kind, text = NOTICES[done]
    names = {view.health.open_id: view.health.name for view in views}
    name = names.get(account or "", account if account and valid_open_id_or_none(account) else "the account")
    extra = [WARNINGS[w] for w in (warn or "").split(",") if w in WARNINGS]
    return ("warn" if extra else kind, " ".join([text.format(name=name), *extra]))


def valid_open_id_or_none(value: str) -> str | None:
    try:
        return valid_open_id(value)
    except UserFacingError:
        return None
