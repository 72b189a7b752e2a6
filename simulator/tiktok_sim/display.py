"""Answer the three Display API endpoints: ``user/info``, ``video/list`` and ``video/query``.

Each request goes through the same steps, in this order (the first failing step answers):

1. an injected *answer* fault (500, HTML 503, 429) -- see :mod:`tiktok_sim.faults`;
2. the rate limiter (per endpoint; per app or per token) -> 429 ``rate_limit_exceeded``;
3. the bearer token -> 401 ``access_token_invalid`` if missing, unknown, expired or revoked;
4. parameters -> 400 ``invalid_params``: ``fields`` missing/empty/unknown, ``fields`` in the body,
   a body that is not a JSON object, ``max_count`` not an integer in 1..20, ``cursor`` not an
   integer in 0..2**63-1, ``filters.video_ids`` not a list of 1..20 strings;
5. scopes -> 401 ``scope_not_authorized`` if any requested field needs a scope the token lacks;
6. the answer, then any bad-data fault.

``video/query`` answers the requested ids in request order (duplicates once) and silently leaves
out ids that are malformed, unknown, another account's, deleted or private.  An empty
``video_ids`` list is rejected as ``invalid_params`` (a client should not spend a call on it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from tiktok_sim import envelope
from tiktok_sim.accounts import visible_bound_ms
from tiktok_sim.envelope import Outcome
from tiktok_sim.faults import ANSWER_KINDS, HTML_503, corrupt_display
from tiktok_sim.fields import (
    USER_FIELD_SCOPES,
    VIDEO_FIELD_SCOPES,
    missing_scopes,
    render_user,
    render_video,
)
from tiktok_sim.oauth import fingerprint
from tiktok_sim.pagination import next_page
from tiktok_sim.population import INT64_MAX
from tiktok_sim.state import Simulator
from tiktok_sim.stats import RequestRecord

DEFAULT_MAX_COUNT = 10
MAX_COUNT = 20
MAX_QUERY_IDS = 20


@dataclass(frozen=True)
class Incoming:
    """What a handler needs from an HTTP request."""

    fields: list[str]
    body: bytes
    authorization: str | None
    content_type: str
    base_url: str


class ParamError(Exception):
    """A parameter the real API would reject with ``invalid_params``."""


def answer_fault(sim: Simulator, kind: str, log_id: str) -> Outcome:
    """Return the response an *answer* fault replaces the endpoint's with."""
    if kind == "internal_error":
        return envelope.error("internal_error", log_id)
    if kind == "html_503":
        # A gateway page, not a TikTok answer: no envelope and no x-tt-logid header.
        return Outcome(
            503, log_id, raw=HTML_503.encode(), media_type="text/html", error_code="html_503", send_log_id=False
        )
    outcome = envelope.error("rate_limit_exceeded", log_id)
    if sim.config.rate_retry_after:
        outcome.headers["Retry-After"] = str(max(1, math.ceil(sim.config.rate_window)))
    return outcome


def rate_limited(sim: Simulator, endpoint: str, key: str, log_id: str) -> Outcome | None:
    """Count the request against the endpoint's budget; return a 429 if it is spent."""
    decision = sim.limiter.hit(endpoint, key, sim.config.rate_limit, sim.config.rate_window)
    if decision.allowed:
        return None
    outcome = envelope.error("rate_limit_exceeded", log_id)
    if sim.config.rate_retry_after:
        outcome.headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after)))
    return outcome


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def parse_fields(raw: list[str], table: dict[str, str]) -> list[str]:
    """Return the requested field names, deduplicated, in request order."""
    if not raw:
        raise ParamError("The fields query parameter is required.")
    names: list[str] = []
    for value in raw:
        for name in value.split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    if not names:
        raise ParamError("The fields query parameter is empty.")
    unknown = [name for name in names if name not in table]
    if unknown:
        raise ParamError(f"Unknown field(s): {', '.join(unknown)}.")
    return names


def parse_body(raw: bytes, *, required: bool) -> dict[str, Any]:
    """Return the JSON object body (``{}`` if absent and optional)."""
    if not raw.strip():
        if required:
            raise ParamError("A JSON request body is required.")
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ParamError("The request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise ParamError("The request body must be a JSON object.")
    if "fields" in value:
        raise ParamError("fields must be sent as a query parameter, not in the body.")
    return value


def int_param(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamError(f"{name} must be an integer.")
    if not low <= value <= high:
        raise ParamError(f"{name} must be between {low} and {high}.")
    return value


def video_ids_param(body: dict[str, Any]) -> list[str]:
    filters = body.get("filters")
    if not isinstance(filters, dict):
        raise ParamError("filters must be an object with video_ids.")
    ids = filters.get("video_ids")
    if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
        raise ParamError("filters.video_ids must be a list of strings.")
    if not ids:
        raise ParamError("filters.video_ids must not be empty.")
    if len(ids) > MAX_QUERY_IDS:
        raise ParamError(f"filters.video_ids holds at most {MAX_QUERY_IDS} ids.")
    return list(dict.fromkeys(ids))


def handle(sim: Simulator, endpoint: str, incoming: Incoming, record: RequestRecord, fault: str | None) -> Outcome:
    """Answer one Display API request (the caller holds ``sim.lock``)."""
    now = sim.now()
    log_id = envelope.new_log_id(now)
    if fault in ANSWER_KINDS:
        return answer_fault(sim, fault, log_id)
    token = bearer_token(incoming.authorization)
    key = "app" if sim.config.rate_scope == "app" else f"token:{fingerprint(token or '')}"
    limited = rate_limited(sim, endpoint, key, log_id)
    if limited is not None:
        record.rate_limited = True
        return limited
    grant = sim.tokens.authenticate(token, now) if token else None
    if grant is None:
        return envelope.error("access_token_invalid", log_id)
    record.open_id = grant.open_id
    account = sim.accounts.get(grant.open_id)
    assert account is not None, "tokens are only minted for existing accounts"
    table = USER_FIELD_SCOPES if endpoint == "user_info" else VIDEO_FIELD_SCOPES
    try:
        fields = parse_fields(incoming.fields, table)
        record.fields = fields
        body = {} if endpoint == "user_info" else parse_body(incoming.body, required=endpoint == "video_query")
        if endpoint == "video_list":
            max_count = int_param(body, "max_count", DEFAULT_MAX_COUNT, 1, MAX_COUNT)
            cursor = int_param(body, "cursor", None, 0, INT64_MAX) or None
            record.body = {"max_count": max_count, "cursor": cursor}
        elif endpoint == "video_query":
            ids = video_ids_param(body)
            record.body = {"video_ids": len(ids)}
    except ParamError as exc:
        if endpoint != "user_info" and record.body is None:
            record.body = {"bytes": len(incoming.body)}
        return envelope.error("invalid_params", log_id, str(exc))
    lacking = missing_scopes(fields, table, grant.scopes)
    if lacking:
        return envelope.error("scope_not_authorized", log_id, f"Missing scope(s): {', '.join(lacking)}.")

    def cover(video_id: str) -> str:
        return sim.cdn_url(incoming.base_url, "cover", video_id)

    def avatar(obj: str) -> str:
        return sim.cdn_url(incoming.base_url, "avatar", obj)

    data: dict[str, Any]
    if endpoint == "user_info":
        data = {"user": render_user(account, fields, now, sim.config.epoch, avatar)}
    elif endpoint == "video_list":
        if fault == "endless_has_more":
            start = cursor if cursor is not None else visible_bound_ms(now)
            data = {"videos": [], "cursor": max(0, start - 1000), "has_more": True}
        else:
            page = next_page(
                account,
                now=now,
                cursor=cursor,
                max_count=max_count or DEFAULT_MAX_COUNT,
                rng=sim.page_rng,
                short_prob=sim.config.page_short_prob,
                empty_prob=sim.config.page_empty_prob,
                duplicate_prob=sim.config.page_duplicate_prob,
            )
            videos = [render_video(sim.config.seed, account, p, fields, now, cover) for p in page.positions]
            data = {"videos": videos, "cursor": page.cursor, "has_more": page.has_more}
            if fault == "stuck_cursor":
                data["cursor"] = cursor if cursor is not None else page.cursor
                data["has_more"] = True
            record.body = {**(record.body or {}), "returned": len(videos), "imperfection": page.imperfection}
    else:
        bound = visible_bound_ms(now)
        videos = []
        for video_id in ids:
            if not (video_id.isascii() and video_id.isdigit()) or len(video_id) > 19:
                continue
            position = account.index_of(int(video_id))
            if position is None or not account.is_public(position) or account.ms[position] >= bound:
                continue
            videos.append(render_video(sim.config.seed, account, position, fields, now, cover))
        data = {"videos": videos}
        record.body = {**(record.body or {}), "returned": len(videos)}
    outcome = envelope.ok(data, log_id)
    if fault == "truncated":
        outcome.truncate = True
    elif fault is not None and fault not in ("slow", "stuck_cursor", "endless_has_more"):
        assert outcome.payload is not None
        corrupt_display(fault, outcome.payload)
        outcome.error_code = outcome.payload["error"]["code"]
    return outcome
