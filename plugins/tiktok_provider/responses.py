"""Turn raw HTTP answers into checked Python values, or into the right :mod:`errors` exception.

Success is ``error.code == "ok"``, never the mere presence of ``error``. Records keep only the
fields that were asked for (absent stays absent); values are cleaned by the one sanitiser
(:mod:`tiktok_provider.sanitize`: integer bounds, NUL bytes, unpaired surrogates), and a field
with a value of the wrong type or out of bounds is dropped (the stored value is kept) and
reported, so one bad value never blocks an account nor writes a corrupt row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from tiktok_provider import errors
from tiktok_provider.fields import BOOL_FIELDS, INT64_MAX, INT_BOUNDS
from tiktok_provider.sanitize import has_unpaired_surrogates, is_int_in_bounds, remove_nul, replace_surrogates

ERROR_CLASSES: dict[str, type[errors.TikTokError]] = {
    "access_token_invalid": errors.TikTokAccessTokenInvalid,
    "scope_not_authorized": errors.TikTokScopeError,
    "scope_permission_missed": errors.TikTokScopeError,
    "invalid_params": errors.TikTokInvalidParams,
    "rate_limit_exceeded": errors.TikTokRateLimited,
    "internal_error": errors.TikTokServerError,
}
OAUTH_REAUTH_CODES = frozenset({"invalid_grant"})
OAUTH_RETRYABLE_CODES = frozenset({"server_error", "temporarily_unavailable"})
#: Longer than any token lives (100 years): a larger lifetime is garbage, and overflows datetimes.
MAX_TOKEN_LIFETIME = 100 * 365 * 24 * 3600
VIDEO_ID = re.compile(r"[0-9]{1,32}")  # used with fullmatch: "$" would let a trailing newline through


@dataclass(frozen=True)
class Envelope:
    """A successful answer: its ``data`` object and TikTok's log_id."""

    data: dict[str, Any]
    log_id: str | None
    http_status: int


@dataclass
class Issues:
    """Values that were sanitised or dropped while cleaning records (for logs and task summaries)."""

    items: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.items.append(text)

    def __len__(self) -> int:
        return len(self.items)


def _preview(value: Any) -> str:
    """A short text of a value for messages (str() of a huge integer raises ValueError)."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"<{value.bit_length()}-bit integer>"
    return str(value)[:40]


def _decode(body: bytes) -> Any:
    """Parse a JSON body; raise ValueError for anything unparseable, however it is broken.

    Bad UTF-8 and bad JSON raise ValueError already; a body nested deeper than the parser can
    follow (``[[[[...``) raises RecursionError, which no caller would expect from a bad answer.
    """
    try:
        return json.loads(body.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply to parse") from None


#: Every body parse of the provider goes through this one function.
decode_json = _decode


def parse_envelope(
    status: int,
    body: bytes,
    *,
    endpoint: str,
    open_id: str | None,
    header_log_id: str | None = None,
    retry_after: float | None = None,
) -> Envelope:
    """Return the envelope of a successful answer or raise the matching :class:`TikTokError`."""
    ctx = {"endpoint": endpoint, "open_id": open_id, "http_status": status, "log_id": header_log_id}
    try:
        payload = _decode(body)
    except (UnicodeDecodeError, ValueError):
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        snippet = body[:80].decode("utf-8", "replace").replace("\n", " ")
        if status == 429:
            raise errors.TikTokRateLimited("rate limited (no JSON body)", retry_after=retry_after, **ctx)
        if status >= 500:
            raise errors.TikTokServerError(f"server error, non-JSON body: {snippet!r}", **ctx)
        if payload is None:
            # A truncated or HTML body under a 2xx/4xx status is a transport fault, not a contract break.
            raise errors.TikTokNetworkError(f"unparseable response body: {snippet!r}", **ctx)
        raise errors.TikTokMalformedResponse("response has no 'error' object", **ctx)

    code = error.get("code")
    log_id = error.get("log_id") if isinstance(error.get("log_id"), str) else header_log_id
    ctx["log_id"] = log_id
    message = str(error.get("message") or "")[:500]
    if code == "ok":
        data = payload.get("data")
        if not isinstance(data, dict):
            raise errors.TikTokMalformedResponse("error.code is 'ok' but 'data' is missing", code=code, **ctx)
        return Envelope(data=data, log_id=log_id, http_status=status)

    cls = ERROR_CLASSES.get(code) if isinstance(code, str) else None
    if cls is None:
        if status == 429:
            cls = errors.TikTokRateLimited
        elif status >= 500:
            cls = errors.TikTokServerError
        else:
            cls = errors.TikTokAPIError
            message = f"unknown error code {code!r}: {message}"
    raise cls(message, code=str(code), retry_after=retry_after, **ctx)


def parse_oauth(status: int, body: bytes, *, endpoint: str, open_id: str | None = None) -> dict[str, Any]:
    """Return a token answer, or raise: OAuth errors come in their own shape, often with HTTP 200."""
    ctx = {"endpoint": endpoint, "open_id": open_id, "http_status": status}
    try:
        payload = _decode(body)
    except (UnicodeDecodeError, ValueError):
        if status >= 500:
            raise errors.TikTokServerError("token endpoint server error (non-JSON body)", **ctx) from None
        raise errors.TikTokNetworkError("unparseable token endpoint answer", **ctx) from None
    if not isinstance(payload, dict):
        raise errors.TikTokMalformedResponse("token endpoint answer is not an object", **ctx)
    log_id = payload.get("log_id") if isinstance(payload.get("log_id"), str) else None
    code = payload.get("error")
    if isinstance(code, dict):  # some gateways answer with the data envelope instead
        code = code.get("code") if code.get("code") != "ok" else None
    if code is not None and not isinstance(code, str):
        code = _preview(code)
    if code:
        description = str(payload.get("error_description") or "")[:300]
        if code in OAUTH_REAUTH_CODES:
            raise errors.TikTokReauthRequired(description, code=code, log_id=log_id, **ctx)
        if code in OAUTH_RETRYABLE_CODES or status >= 500:
            raise errors.TikTokServerError(description, code=code, log_id=log_id, **ctx)
        raise errors.TikTokOAuthError(description, code=code, log_id=log_id, **ctx)
    if status == 429:
        raise errors.TikTokRateLimited("token endpoint rate limited", log_id=log_id, **ctx)
    if status >= 500:
        raise errors.TikTokServerError("token endpoint server error", log_id=log_id, **ctx)
    # The refresh token is the one value an answer cannot do without: TikTok rotated (or issued) it
    # when it answered, so everything else that is missing or odd is made do with, never fatal --
    # throwing the answer away would lose the account. The caller fills in and logs what is absent:
    # ``open_id`` (None: the caller knows which account it refreshed, or fails clearly),
    # ``access_token`` (None: stored as expired, so the next use refreshes), ``expires_in`` (None
    # when missing or not a lifetime: taken as "expired now") and ``refresh_expires_in`` (dropped).
    if not isinstance(payload.get("refresh_token"), str) or not payload["refresh_token"]:
        raise errors.TikTokMalformedResponse("token answer lacks a valid 'refresh_token'", log_id=log_id, **ctx)
    for key in ("access_token", "open_id"):
        if not isinstance(payload.get(key), str) or not payload[key]:
            payload[key] = None
    payload["expires_in"] = _lifetime(payload.get("expires_in"))
    refresh_seconds = _lifetime(payload.pop("refresh_expires_in", None))
    if refresh_seconds is not None:
        payload["refresh_expires_in"] = refresh_seconds
    return payload


def _lifetime(value: Any) -> int | None:
    """A token lifetime in seconds, or None if it is not one.

    Whole numbers are read however they are written: ``86400``, ``86400.0``, ``"86400"``,
    ``"86400.0"``; anything else (zero, negative, fractional, absurdly large, a boolean) is None.
    """
    if isinstance(value, str) and value.isascii() and len(value) <= 16 and re.fullmatch(r"[0-9]+(\.0*)?", value):
        value = int(value.split(".", 1)[0])
    elif type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int or not 0 < value <= MAX_TOKEN_LIFETIME:
        return None
    return value


def clean_record(
    raw: Any,
    fields: Collection[str],
    *,
    issues: Issues,
    what: str,
) -> dict[str, Any] | None:
    """Keep the requested fields of one user or video object, checked and sanitised.

    Returns None if the record itself is unusable (not an object, or a video without a valid id).
    """
    if not isinstance(raw, Mapping):
        issues.add(f"{what}: not an object, skipped")
        return None
    clean: dict[str, Any] = {}
    for name in fields:
        if name not in raw:
            continue  # absent stays absent
        value = raw[name]
        if name in INT_BOUNDS:
            if not is_int_in_bounds(name, value):
                issues.add(f"{what}: {name}={_preview(value)!r} is not an integer in range, dropped")
                continue
        elif name in BOOL_FIELDS:
            if not isinstance(value, bool):
                issues.add(f"{what}: {name}={_preview(value)!r} is not a boolean, dropped")
                continue
        else:
            if not isinstance(value, str):
                issues.add(f"{what}: {name} is a {type(value).__name__}, not a string, dropped")
                continue
            if "\x00" in value:
                value = remove_nul(value)
                issues.add(f"{what}: NUL bytes removed from {name}")
            if has_unpaired_surrogates(value):
                value = replace_surrogates(value)
                issues.add(f"{what}: unpaired surrogates replaced in {name}")
        clean[name] = value
    return clean


def clean_video(raw: Any, fields: Collection[str], *, issues: Issues) -> dict[str, Any] | None:
    """Clean one video object; a video without a valid numeric string id is skipped and reported."""
    vid = raw.get("id") if isinstance(raw, Mapping) else None
    if not isinstance(vid, str) or not VIDEO_ID.fullmatch(vid):
        issues.add(f"video id {_preview(vid)!r} is not a numeric string, video skipped")
        return None
    return clean_record(raw, set(fields) | {"id"}, issues=issues, what=f"video {vid}")


@dataclass(frozen=True)
class VideoPage:
    """One page of ``video/list``: cleaned videos, the cursor to ask for next, whether there is more."""

    videos: list[dict[str, Any]]
    cursor: int | None
    has_more: bool
    log_id: str | None
    skipped: int = 0


def parse_video_page(
    envelope: Envelope, fields: Collection[str], *, endpoint: str, open_id: str, issues: Issues
) -> VideoPage:
    """Check the shape of a ``video/list`` answer and clean its videos."""
    data = envelope.data
    ctx = {
        "endpoint": endpoint,
        "open_id": open_id,
        "http_status": envelope.http_status,
        "log_id": envelope.log_id,
    }
    # An answer without videos or has_more is not "no videos": read as one, a full sync would
    # take every stored video for removed.
    for key in ("videos", "has_more"):
        if key not in data:
            raise errors.TikTokMalformedResponse(f"data.{key} is missing", **ctx)
    videos = data["videos"]
    has_more = data["has_more"]
    cursor = data.get("cursor")
    if not isinstance(videos, list):
        raise errors.TikTokMalformedResponse("data.videos is not a list", **ctx)
    if not isinstance(has_more, bool):
        raise errors.TikTokMalformedResponse(f"data.has_more is {has_more!r}, not a boolean", **ctx)
    if isinstance(cursor, str) and cursor.isascii() and cursor.isdigit() and len(cursor) <= 20:
        issues.add(f"data.cursor {cursor!r} is a string, read as an integer")
        cursor = int(cursor)
    if cursor is not None and (isinstance(cursor, bool) or not isinstance(cursor, int) or not 0 <= cursor <= INT64_MAX):
        raise errors.TikTokMalformedResponse(f"data.cursor is {_preview(cursor)!r}, not a timestamp", **ctx)
    if has_more and cursor is None:
        raise errors.TikTokMalformedResponse("has_more is true but no cursor was returned", **ctx)
    before = len(issues)
    cleaned = [v for v in (clean_video(raw, fields, issues=issues) for raw in videos) if v is not None]
    return VideoPage(
        videos=cleaned,
        cursor=cursor,
        has_more=has_more,
        log_id=envelope.log_id,
        skipped=len(videos) - len(cleaned) if len(issues) > before else 0,
    )


@dataclass(frozen=True)
class QueryAnswer:
    """One ``video/query`` answer: the cleaned videos among those requested, and how many had no usable id."""

    videos: list[dict[str, Any]]
    log_id: str | None
    skipped: int = 0


def parse_video_query(
    envelope: Envelope,
    fields: Collection[str],
    *,
    requested: Collection[str],
    endpoint: str,
    open_id: str,
    issues: Issues,
) -> QueryAnswer:
    """Check the shape of a ``video/query`` answer and clean its videos (only requested ids are kept).

    ``data.videos`` must be there: an answer without it says nothing about the requested ids, and
    read as an empty list it would take every one of them for deleted.
    """
    ctx = {
        "endpoint": endpoint,
        "open_id": open_id,
        "http_status": envelope.http_status,
        "log_id": envelope.log_id,
    }
    if "videos" not in envelope.data:
        raise errors.TikTokMalformedResponse("data.videos is missing", **ctx)
    raw = envelope.data["videos"]
    if not isinstance(raw, list):
        raise errors.TikTokMalformedResponse("data.videos is not a list", **ctx)
    wanted = set(requested)
    cleaned = [clean_video(r, fields, issues=issues) for r in raw]
    return QueryAnswer(
        videos=[v for v in cleaned if v and v["id"] in wanted],
        log_id=envelope.log_id,
        skipped=cleaned.count(None),
    )
