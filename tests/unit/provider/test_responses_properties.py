"""Property-based tests of response parsing: whatever TikTok (or a proxy) answers, parsing either
returns checked values or raises a TikTokError -- never another exception, never an unchecked value."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tiktok_provider import errors
from tiktok_provider.fields import BOOL_FIELDS, INT_BOUNDS, USER_FIELDS, VIDEO_FIELDS
from tiktok_provider.responses import (
    Envelope,
    Issues,
    clean_record,
    clean_video,
    parse_envelope,
    parse_oauth,
    parse_video_page,
)

SETTINGS = settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
ALL_FIELDS = sorted({*USER_FIELDS, *VIDEO_FIELDS})
CODES = [
    "ok",
    "access_token_invalid",
    "scope_not_authorized",
    "scope_permission_missed",
    "invalid_params",
    "rate_limit_exceeded",
    "internal_error",
    "sim_unknown_error",
]
OAUTH_CODES = ["invalid_grant", "invalid_client", "server_error", "temporarily_unavailable", "access_denied"]

# Text as hostile as JSON can carry: NUL, unpaired surrogates, emoji, long runs.
texts = st.text(st.characters(codec=None, exclude_categories=()), max_size=60) | st.sampled_from(
    ["", "\x00", "a\x00b", "\ud83d", "x\udc00y", "🔥" * 3, "x" * 10_000, "123\n", "١٢٣", "²"]
)
integers = st.integers() | st.sampled_from([0, -1, 2**31, 2**63 - 1, 2**63, 2**64 + 5, 253_402_300_800])
scalars = st.none() | st.booleans() | integers | st.floats(allow_nan=True) | texts
anything = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)
#: Objects shaped like users and videos, with any value in any field.
records = st.dictionaries(st.sampled_from([*ALL_FIELDS, "extra"]), anything, max_size=len(ALL_FIELDS))
video_ids = st.from_regex(r"[0-9]{1,19}", fullmatch=True) | texts | integers | st.none()
videos = st.builds(lambda record, vid: {**record, "id": vid}, records, video_ids) | anything
page_data = st.fixed_dictionaries(
    {},
    optional={
        "videos": st.lists(videos, max_size=6) | anything,
        "cursor": integers | texts | st.none() | st.booleans(),
        "has_more": st.booleans() | anything,
    },
)


def envelopes() -> st.SearchStrategy[Any]:
    error = st.fixed_dictionaries(
        {},
        optional={"code": st.sampled_from(CODES) | anything, "message": anything, "log_id": anything},
    )
    shaped = st.fixed_dictionaries({}, optional={"data": page_data | anything, "error": error | anything})
    return shaped | anything


def bodies(documents: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """JSON documents, encoded either way, possibly cut off; or bytes that are not JSON at all."""

    def encode(doc: Any, ascii_only: bool, cut: float) -> bytes:
        try:
            raw = json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
        except ValueError:  # integers too long for json to write
            raw = b"{"
        return raw[: int(len(raw) * cut)] if cut < 1 else raw

    encoded = st.builds(encode, documents, st.booleans(), st.sampled_from([1.0, 1.0, 1.0, 0.5, 0.9]))
    html = st.just(b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>")
    return encoded | html | st.binary(max_size=200)


statuses = st.sampled_from([200, 200, 200, 400, 401, 404, 429, 500, 502, 503, 504]) | st.integers(100, 599)


def check_value(name: str, value: Any) -> None:
    if name in INT_BOUNDS:
        assert type(value) is int and 0 <= value <= INT_BOUNDS[name], (name, value)
    elif name in BOOL_FIELDS:
        assert type(value) is bool, (name, value)
    else:
        assert type(value) is str, (name, value)
        assert "\x00" not in value
        value.encode("utf-8")  # no unpaired surrogates: it can be written anywhere as UTF-8


@SETTINGS
@given(status=statuses, body=bodies(envelopes()), header_log_id=st.none() | texts, retry_after=st.none() | st.floats())
def test_parse_envelope_returns_data_or_raises_a_tiktok_error(status, body, header_log_id, retry_after) -> None:
    try:
        envelope = parse_envelope(
            status,
            body,
            endpoint="/v2/video/list/",
            open_id="acct",
            header_log_id=header_log_id,
            retry_after=retry_after,
        )
    except errors.TikTokError as exc:
        text = str(exc)
        assert "acct" in text and "/v2/video/list/" in text
        assert isinstance(exc.retryable, bool)
        return
    assert isinstance(envelope.data, dict)
    assert json.loads(body)["error"]["code"] == "ok"


oauth_documents = (
    st.fixed_dictionaries(
        {},
        optional={
            "access_token": texts | anything,
            "refresh_token": texts | anything,
            "open_id": texts | anything,
            "expires_in": integers | texts | anything,
            "refresh_expires_in": integers | texts | anything,
            "scope": texts | anything,
            "error": st.sampled_from(OAUTH_CODES) | anything,
            "error_description": anything,
            "log_id": anything,
        },
    )
    | anything
)


@SETTINGS
@given(status=statuses, body=bodies(oauth_documents))
def test_parse_oauth_returns_a_checked_grant_or_raises_a_tiktok_error(status, body) -> None:
    try:
        payload = parse_oauth(status, body, endpoint="/v2/oauth/token/", open_id="acct")
    except errors.TikTokError:
        return
    # The rotated refresh token is what must never be thrown away; the rest may be absent (None).
    assert isinstance(payload["refresh_token"], str) and payload["refresh_token"]
    for key in ("access_token", "open_id"):
        assert payload[key] is None or (isinstance(payload[key], str) and payload[key])
    assert payload["expires_in"] is None or (type(payload["expires_in"]) is int and payload["expires_in"] > 0)
    if "refresh_expires_in" in payload:
        assert type(payload["refresh_expires_in"]) is int and payload["refresh_expires_in"] > 0


@SETTINGS
@given(raw=records | anything, fields=st.lists(st.sampled_from(ALL_FIELDS), unique=True))
@example(raw={"title": "cut \ud83d\x00 off", "view_count": 2**63, "is_verified": 1}, fields=["title", "view_count"])
def test_clean_record_keeps_only_requested_fields_with_checked_values(raw, fields) -> None:
    issues = Issues()
    clean = clean_record(raw, fields, issues=issues, what="user acct")
    if clean is None:
        assert not isinstance(raw, dict)
        return
    assert set(clean) <= set(fields) & set(raw)
    for name, value in clean.items():
        check_value(name, value)
    assert all(isinstance(text, str) for text in issues.items)


@SETTINGS
@given(raw=videos, fields=st.lists(st.sampled_from(list(VIDEO_FIELDS)), unique=True))
def test_clean_video_yields_numeric_ids_and_checked_values(raw, fields) -> None:
    clean = clean_video(raw, fields, issues=Issues())
    if clean is None:
        return
    assert clean["id"].isascii() and clean["id"].isdigit() and len(clean["id"]) <= 32
    for name, value in clean.items():
        check_value(name, value)


@SETTINGS
@given(data=page_data | st.dictionaries(texts, anything, max_size=3), status=statuses)
def test_parse_video_page_returns_a_checked_page_or_raises_a_tiktok_error(data, status) -> None:
    envelope = Envelope(data=data, log_id="20260101000000ABCDEF0123456789ABCDEF", http_status=status)
    try:
        page = parse_video_page(envelope, VIDEO_FIELDS, endpoint="/v2/video/list/", open_id="acct", issues=Issues())
    except errors.TikTokError as exc:
        assert exc.log_id == envelope.log_id
        return
    assert type(page.has_more) is bool
    assert page.cursor is None or (type(page.cursor) is int and 0 <= page.cursor <= 2**63 - 1)
    assert not (page.has_more and page.cursor is None)
    for video in page.videos:
        assert video["id"].isascii() and video["id"].isdigit()
        for name, value in video.items():
            check_value(name, value)
