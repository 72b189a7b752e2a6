"""Contract tests: every kind of simulator answer against the OpenAPI file and the facts sheet.

The OpenAPI schemas leave ``additionalProperties`` open and give no integer ranges, so the
known ``User``/``Video`` properties are also checked for exact types and int32/int64 ranges.
OAuth answers are not in the OpenAPI file; they are checked against the facts sheet's fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator

from tiktok_sim.fields import USER_FIELD_SCOPES, VIDEO_FIELDS
from tiktok_sim.testing import LOG_ID_PATTERN, ConnectedAccount, SimulatorConnection, running_simulator

SPEC_PATH = Path(__file__).resolve().parents[2].parent / "shared/spec/tiktok-display-api.openapi.yaml"
INT32 = (0, 2**31 - 1)
INT64 = (0, 2**63 - 1)
USER_TYPES: dict[str, Any] = {
    "open_id": str,
    "union_id": str,
    "avatar_url": str,
    "avatar_url_100": str,
    "avatar_large_url": str,
    "display_name": str,
    "bio_description": str,
    "profile_deep_link": str,
    "is_verified": bool,
    "username": str,
    "follower_count": INT64,
    "following_count": INT64,
    "likes_count": INT64,
    "video_count": INT64,
}
VIDEO_TYPES: dict[str, Any] = {
    "id": str,
    "create_time": INT64,
    "cover_image_url": str,
    "share_url": str,
    "video_description": str,
    "duration": INT32,
    "height": INT32,
    "width": INT32,
    "title": str,
    "embed_html": str,
    "embed_link": str,
    "like_count": INT32,
    "comment_count": INT32,
    "share_count": INT32,
    "view_count": INT64,
}
Check = Callable[[requests.Response, str, int], dict[str, Any]]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    if not SPEC_PATH.exists():
        pytest.skip(f"the OpenAPI contract is not beside the clone ({SPEC_PATH})")
    return yaml.safe_load(SPEC_PATH.read_text())


def validate(spec: dict[str, Any], schema_name: str, body: Any) -> None:
    """Validate ``body`` against ``#/components/schemas/<schema_name>`` of the spec."""
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    errors = sorted(Draft202012Validator(schema).iter_errors(body), key=lambda error: list(error.path))
    assert not errors, [f"{list(error.path)}: {error.message}" for error in errors]


def check_types(record: dict[str, Any], types: dict[str, Any]) -> None:
    for name, value in record.items():
        expected = types[name]
        if isinstance(expected, tuple):
            low, high = expected
            assert type(value) is int and low <= value <= high, (name, value)
        else:
            assert type(value) is expected, (name, value)


def test_the_validation_is_live(spec: dict[str, Any]) -> None:
    bad = {"data": {"videos": [{"id": 7, "view_count": "12"}], "cursor": "x", "has_more": "yes"}, "error": {}}
    with pytest.raises(AssertionError):
        validate(spec, "VideoListResponse", bad)
    with pytest.raises(AssertionError):
        check_types({"like_count": 2**31}, VIDEO_TYPES)


def test_the_spec_and_the_simulator_agree_on_field_names(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert set(schemas["Video"]["properties"]) == set(VIDEO_FIELDS)
    # The facts sheet adds avatar_url_100, avatar_large_url and username to the spec's User.
    assert set(schemas["User"]["properties"]) <= set(USER_FIELD_SCOPES)


def test_user_info_matches_the_contract(spec: dict[str, Any], creator: ConnectedAccount, check_envelope: Check) -> None:
    body = check_envelope(creator.api.user_info(list(USER_FIELD_SCOPES)), "ok", 200)
    validate(spec, "UserInfoResponse", body)
    check_types(body["data"]["user"], USER_TYPES)


def test_video_list_matches_the_contract(
    spec: dict[str, Any], creator: ConnectedAccount, check_envelope: Check
) -> None:
    body = check_envelope(creator.api.video_list(VIDEO_FIELDS, max_count=20), "ok", 200)
    validate(spec, "VideoListResponse", body)
    assert type(body["data"]["cursor"]) is int and type(body["data"]["has_more"]) is bool
    for video in body["data"]["videos"]:
        check_types(video, VIDEO_TYPES)
        assert len(video["id"]) == 19 and video["id"].isdigit()
        assert len(video["title"]) <= 150 and len(video["video_description"]) <= 150


def test_video_query_matches_the_contract(
    spec: dict[str, Any], creator: ConnectedAccount, check_envelope: Check
) -> None:
    ids = [video["id"] for video in creator.api.video_list("id", max_count=20).json()["data"]["videos"]]
    body = check_envelope(creator.api.video_query(VIDEO_FIELDS, ids), "ok", 200)
    validate(spec, "VideoQueryResponse", body)
    for video in body["data"]["videos"]:
        check_types(video, VIDEO_TYPES)


def test_the_list_request_we_accept_is_the_one_the_contract_describes(spec: dict[str, Any]) -> None:
    validate(spec, "VideoListRequest", {"max_count": 20, "cursor": 1_700_000_000_000})
    validate(spec, "VideoQueryRequest", {"filters": {"video_ids": ["7234567890123456789"]}})


@pytest.mark.parametrize(
    ("schema_name", "code", "status", "make"),
    [
        ("UserInfoResponse", "access_token_invalid", 401, lambda c: c.anonymous.user_info("open_id")),
        ("UserInfoResponse", "scope_not_authorized", 401, lambda c: c.basic.user_info("follower_count")),
        ("UserInfoResponse", "invalid_params", 400, lambda c: c.full.user_info("nope")),
        ("VideoListResponse", "invalid_params", 400, lambda c: c.full.video_list("id", max_count=21)),
        ("VideoListResponse", "scope_not_authorized", 401, lambda c: c.basic.video_list("id")),
        ("VideoQueryResponse", "invalid_params", 400, lambda c: c.full.video_query("id", ["1"] * 21)),
        ("VideoQueryResponse", "access_token_invalid", 401, lambda c: c.anonymous.video_query("id", ["1"])),
    ],
)
def test_error_answers_match_the_contract(
    spec: dict[str, Any],
    sim: SimulatorConnection,
    check_envelope: Check,
    schema_name: str,
    code: str,
    status: int,
    make: Callable[[Any], requests.Response],
) -> None:
    open_id = sim.admin.create_account(videos=2)["open_id"]

    class Clients:
        anonymous = sim.display(None)
        basic = sim.display(sim.get_tokens(open_id, ["user.info.basic"]))
        full = sim.display(sim.get_tokens(open_id))

    body = check_envelope(make(Clients), code, status)
    validate(spec, schema_name, body)
    check_types(body["error"], {"code": str, "message": str, "log_id": str})


def test_rate_limit_and_internal_errors_match_the_contract(spec: dict[str, Any], check_envelope: Check) -> None:
    with running_simulator(seed=2, accounts=0, rate_limit=1, rate_window=30) as process:
        api = process.connected_account(videos=2).api
        check_envelope(api.video_list("id"), "ok", 200)
        validate(spec, "VideoListResponse", check_envelope(api.video_list("id"), "rate_limit_exceeded", 429))
        process.admin.fail_next("user_info", "internal_error")
        validate(spec, "UserInfoResponse", check_envelope(api.user_info("open_id"), "internal_error", 500))


def test_oauth_answers_match_the_facts_sheet(sim: SimulatorConnection) -> None:
    open_id = sim.admin.create_account(videos=1)["open_id"]
    code = sim.admin.mint_code(open_id, ["user.info.basic"], "https://example.com/cb")
    answer = sim.exchange_code(code, "https://example.com/cb")
    check_types(
        answer,
        {
            "access_token": str,
            "expires_in": INT32,
            "refresh_token": str,
            "refresh_expires_in": INT32,
            "open_id": str,
            "scope": str,
            "token_type": str,
            "log_id": str,
        },
    )
    assert set(answer) == {
        "access_token",
        "expires_in",
        "refresh_token",
        "refresh_expires_in",
        "open_id",
        "scope",
        "token_type",
        "log_id",
    }
    assert answer["access_token"].startswith("act.") and answer["refresh_token"].startswith("rft.")
    assert answer["token_type"] == "Bearer"
    assert re.fullmatch(r"[a-z.]+(,[a-z.]+)*", answer["scope"])
    error = sim.exchange_code(code, "https://example.com/cb")
    assert set(error) == {"error", "error_description", "log_id"}
    check_types(error, {"error": str, "error_description": str, "log_id": str})
    assert LOG_ID_PATTERN.match(error["log_id"])
