"""Answer ``POST /v2/oauth/token/`` and ``POST /v2/oauth/revoke/``.

Both take ``application/x-www-form-urlencoded`` bodies; anything else is ``invalid_request``.
Checks run in this order: injected answer fault, rate limit (always per app here, since these
calls carry no bearer token), content type and form syntax (``invalid_request``), client
credentials (``invalid_request`` if missing, ``invalid_client`` if wrong), ``grant_type``
(``invalid_request`` if missing, ``unsupported_grant_type`` unless ``authorization_code`` or
``refresh_token``), the grant's own parameters (``invalid_request``) and finally the grant itself
(``invalid_grant``, see :mod:`tiktok_sim.oauth`).

Success is flat JSON (no ``data`` wrapper) with a ``log_id``; errors are
``{"error", "error_description", "log_id"}`` with HTTP ``oauth_error_status`` (200 by default:
TikTok lets the body decide).  Injected ``internal_error`` answers 500 ``server_error`` and an
injected or real rate limit answers 429 ``temporarily_unavailable``.  A successful revoke answers
``{"log_id": ...}``.
"""

from __future__ import annotations

import math
from urllib.parse import parse_qs

from tiktok_sim.display import Incoming, answer_fault
from tiktok_sim.envelope import Outcome, new_log_id, oauth_error
from tiktok_sim.faults import corrupt_oauth
from tiktok_sim.oauth import OAuthError
from tiktok_sim.state import Simulator
from tiktok_sim.stats import RequestRecord

FORM_TYPE = "application/x-www-form-urlencoded"
GRANT_TYPES = ("authorization_code", "refresh_token")


def _form(incoming: Incoming) -> dict[str, str]:
    media_type = incoming.content_type.split(";", 1)[0].strip().lower()
    if media_type != FORM_TYPE:
        raise OAuthError("invalid_request", f"Content-Type must be {FORM_TYPE}.")
    try:
        text = incoming.body.decode()
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "The request body is not UTF-8.") from None
    parsed = parse_qs(text, keep_blank_values=True)
    repeated = sorted(name for name, values in parsed.items() if len(values) > 1)
    if repeated:
        raise OAuthError("invalid_request", f"Parameter(s) sent more than once: {', '.join(repeated)}.")
    return {name: values[0] for name, values in parsed.items()}


def _require(form: dict[str, str], *names: str) -> None:
    missing = [name for name in names if not form.get(name)]
    if missing:
        raise OAuthError("invalid_request", f"Missing parameter(s): {', '.join(missing)}.")


def _check_client(sim: Simulator, form: dict[str, str]) -> None:
    _require(form, "client_key", "client_secret")
    if form["client_key"] != sim.config.client_key or form["client_secret"] != sim.client_secret:
        raise OAuthError("invalid_client", "Client key or secret is invalid.")


def _preamble(sim: Simulator, endpoint: str, fault: str | None, log_id: str, record: RequestRecord) -> Outcome | None:
    if fault == "internal_error":
        return oauth_error("server_error", "Internal server error, please retry.", log_id, 500)
    if fault == "rate_limit":
        return _too_many(sim, log_id, sim.config.rate_window)
    if fault == "html_503":
        return answer_fault(sim, fault, log_id)
    decision = sim.limiter.hit(endpoint, "app", sim.config.rate_limit, sim.config.rate_window)
    if not decision.allowed:
        record.rate_limited = True
        return _too_many(sim, log_id, decision.retry_after)
    return None


def _too_many(sim: Simulator, log_id: str, retry_after: float) -> Outcome:
    outcome = oauth_error("temporarily_unavailable", "Rate limit exceeded, please retry later.", log_id, 429)
    if sim.config.rate_retry_after:
        outcome.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return outcome


def handle_token(sim: Simulator, incoming: Incoming, record: RequestRecord, fault: str | None) -> Outcome:
    """Answer one token request (the caller holds ``sim.lock``)."""
    now = sim.now()
    log_id = new_log_id(now)
    early = _preamble(sim, "oauth_token", fault, log_id, record)
    if early is not None:
        return early
    try:
        form = _form(incoming)
        grant_type = form.get("grant_type", "")
        record.grant_type = grant_type if grant_type in GRANT_TYPES else ("missing" if not grant_type else "other")
        record.body = {
            "grant_type": grant_type[:40],
            "client_key": form.get("client_key", "")[:80],
            "redirect_uri": form.get("redirect_uri"),
            "has_code": bool(form.get("code")),
            "has_code_verifier": bool(form.get("code_verifier")),
            "has_refresh_token": bool(form.get("refresh_token")),
        }
        _check_client(sim, form)
        _require(form, "grant_type")
        if grant_type == "authorization_code":
            _require(form, "code", "redirect_uri")
            payload = sim.tokens.exchange_code(
                code=form["code"],
                redirect_uri=form["redirect_uri"],
                code_verifier=form.get("code_verifier"),
                now=now,
                access_ttl=sim.config.access_ttl,
                refresh_ttl=sim.config.refresh_ttl,
            )
        elif grant_type == "refresh_token":
            _require(form, "refresh_token")
            payload = sim.tokens.refresh_grant(
                refresh_token=form["refresh_token"],
                now=now,
                access_ttl=sim.config.access_ttl,
                refresh_ttl=sim.config.refresh_ttl,
            )
        else:
            raise OAuthError("unsupported_grant_type", f"grant_type {grant_type[:40]!r} is not supported.")
    except OAuthError as exc:
        return oauth_error(exc.error, exc.description, log_id, sim.config.oauth_error_status)
    record.open_id = payload["open_id"]
    payload["log_id"] = log_id
    outcome = Outcome(200, log_id, payload, error_code="ok")
    if fault == "truncated":
        outcome.truncate = True
    elif fault in ("unknown_error_code", "missing_data", "wrong_types"):
        corrupt_oauth(fault, payload)
        outcome.error_code = str(payload.get("error", "ok"))
    return outcome


def handle_revoke(sim: Simulator, incoming: Incoming, record: RequestRecord, fault: str | None) -> Outcome:
    """Answer one revoke request (the caller holds ``sim.lock``)."""
    now = sim.now()
    log_id = new_log_id(now)
    early = _preamble(sim, "oauth_revoke", fault, log_id, record)
    if early is not None:
        return early
    try:
        form = _form(incoming)
        record.body = {"client_key": form.get("client_key", "")[:80]}
        _check_client(sim, form)
        _require(form, "token")
    except OAuthError as exc:
        return oauth_error(exc.error, exc.description, log_id, sim.config.oauth_error_status)
    token = form["token"]
    kind = sim.tokens.token_kind(token)
    if kind == "access":
        record.open_id = sim.tokens.access[token].open_id
    elif kind == "refresh":
        record.open_id = sim.tokens.refresh[token].open_id
    sim.tokens.revoke_token(token)
    record.body["token_kind"] = kind
    payload = {"log_id": log_id}
    outcome = Outcome(200, log_id, payload, error_code="ok")
    if fault == "truncated":
        outcome.truncate = True
    elif fault in ("unknown_error_code", "missing_data"):
        corrupt_oauth(fault, payload)
        outcome.error_code = str(payload.get("error", "ok"))
    return outcome
