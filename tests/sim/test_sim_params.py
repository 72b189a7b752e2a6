"""Requests the real API rejects with ``invalid_params`` (400) are rejected the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from tiktok_sim.testing import ConnectedAccount, DisplayApi

Check = Callable[[requests.Response, str, int], dict[str, Any]]


def test_fields_parameter_is_required_everywhere(creator: ConnectedAccount, check_envelope: Check) -> None:
    api = creator.api
    for answer in (api.user_info(None), api.video_list(None), api.video_query(None, ["1"])):
        body = check_envelope(answer, "invalid_params", 400)
        assert "fields" in body["error"]["message"]


@pytest.mark.parametrize("fields", ["", ",", "open_id,nope", "follower_count,id"])
def test_empty_or_unknown_user_fields_are_invalid(
    creator: ConnectedAccount, check_envelope: Check, fields: str
) -> None:
    check_envelope(creator.api.user_info(fields), "invalid_params", 400)


def test_user_fields_on_a_video_endpoint_are_invalid(creator: ConnectedAccount, check_envelope: Check) -> None:
    body = check_envelope(creator.api.video_list("id,display_name"), "invalid_params", 400)
    assert "display_name" in body["error"]["message"]


def test_fields_in_the_body_are_rejected(creator: ConnectedAccount, check_envelope: Check) -> None:
    check_envelope(creator.api.video_list("id", body={"fields": "id", "max_count": 5}), "invalid_params", 400)
    check_envelope(creator.api.video_list(None, body={"fields": "id"}), "invalid_params", 400)
    check_envelope(
        creator.api.video_query("id", body={"fields": ["id"], "filters": {"video_ids": ["1"]}}),
        "invalid_params",
        400,
    )


@pytest.mark.parametrize("max_count", [0, 21, -1, "x", "10", 10.0, 2.5, True, [10]])
def test_max_count_must_be_an_integer_from_1_to_20(
    creator: ConnectedAccount, check_envelope: Check, max_count: object
) -> None:
    check_envelope(creator.api.video_list("id", body={"max_count": max_count}), "invalid_params", 400)


@pytest.mark.parametrize("max_count", [1, 20])
def test_max_count_bounds_are_accepted(creator: ConnectedAccount, check_envelope: Check, max_count: int) -> None:
    body = check_envelope(creator.api.video_list("id", max_count=max_count), "ok", 200)
    assert len(body["data"]["videos"]) == max_count


def test_max_count_defaults_to_10(creator: ConnectedAccount, check_envelope: Check) -> None:
    assert len(check_envelope(creator.api.video_list("id"), "ok", 200)["data"]["videos"]) == 10
    assert len(check_envelope(creator.api.video_list("id", body={}), "ok", 200)["data"]["videos"]) == 10


@pytest.mark.parametrize("cursor", [-1, "1700000000000", 1.5, 2**63, False])
def test_cursor_must_be_a_non_negative_int64(creator: ConnectedAccount, check_envelope: Check, cursor: object) -> None:
    check_envelope(creator.api.video_list("id", body={"cursor": cursor}), "invalid_params", 400)


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_rejected(
    creator: ConnectedAccount, check_envelope: Check, raw: bytes
) -> None:
    check_envelope(creator.api.video_list("id", raw=raw), "invalid_params", 400)
    check_envelope(creator.api.video_query("id", raw=raw), "invalid_params", 400)


def test_more_than_20_ids_are_rejected(creator: ConnectedAccount, check_envelope: Check) -> None:
    ids = [video["id"] for video in creator.api.list_all("id")[0]]
    check_envelope(creator.api.video_query("id", ids[:21]), "invalid_params", 400)
    assert len(check_envelope(creator.api.video_query("id", ids[:20]), "ok", 200)["data"]["videos"]) == 20


@pytest.mark.parametrize(
    "body",
    [None, {}, {"filters": None}, {"filters": {}}, {"filters": {"video_ids": "123"}}, {"filters": {"video_ids": [1]}}],
    ids=["no-body", "empty", "null-filters", "no-ids", "ids-not-list", "ids-not-strings"],
)
def test_query_needs_a_list_of_string_ids(creator: ConnectedAccount, check_envelope: Check, body: object) -> None:
    answer = creator.api.video_query("id", raw=b"") if body is None else creator.api.video_query("id", body=body)
    check_envelope(answer, "invalid_params", 400)


def test_an_empty_id_list_is_rejected(creator: ConnectedAccount, check_envelope: Check) -> None:
    check_envelope(creator.api.video_query("id", []), "invalid_params", 400)


def test_a_missing_list_body_means_defaults(creator: ConnectedAccount, check_envelope: Check) -> None:
    body = check_envelope(creator.api.video_list("id", raw=b""), "ok", 200)
    assert len(body["data"]["videos"]) == 10


def test_the_token_is_checked_before_the_parameters(creator: ConnectedAccount, check_envelope: Check) -> None:
    anonymous = DisplayApi(creator.api.base_url, None)
    check_envelope(anonymous.video_list(None, body={"max_count": 0}), "access_token_invalid", 401)
