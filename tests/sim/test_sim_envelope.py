"""The envelope, log ids, per-field scopes and field selection of the Display API endpoints."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from tiktok_sim.fields import SCOPES, USER_FIELD_SCOPES, VIDEO_FIELDS
from tiktok_sim.testing import ConnectedAccount, DisplayApi, SimulatorConnection

Check = Callable[[requests.Response, str, int], dict[str, Any]]


def test_success_answers_carry_the_ok_envelope_and_log_id_header(
    creator: ConnectedAccount, check_envelope: Check
) -> None:
    api = creator.api
    user = check_envelope(api.user_info("open_id"), "ok", 200)
    listed = check_envelope(api.video_list("id", max_count=3), "ok", 200)
    ids = [video["id"] for video in listed["data"]["videos"]]
    queried = check_envelope(api.video_query("id", ids), "ok", 200)
    assert user["data"]["user"] == {"open_id": creator.open_id}
    assert [video["id"] for video in queried["data"]["videos"]] == ids


def test_log_id_is_stamped_with_the_simulated_utc_time_and_unique(
    sim: SimulatorConnection, creator: ConnectedAccount
) -> None:
    answers = [creator.api.user_info("open_id") for _ in range(5)]
    log_ids = [answer.json()["error"]["log_id"] for answer in answers]
    assert len(set(log_ids)) == 5
    stamp = datetime.strptime(log_ids[0][:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC).timestamp()
    assert abs(stamp - sim.admin.now()) < 10


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer act.doesnotexist0000000000000000000000000000000000"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["missing", "unknown", "empty", "not-bearer"],
)
def test_missing_or_unknown_token_is_access_token_invalid(
    sim: SimulatorConnection, check_envelope: Check, headers: dict[str, str]
) -> None:
    for answer in (
        requests.get(f"{sim.base_url}/v2/user/info/", params={"fields": "open_id"}, headers=headers, timeout=10),
        requests.post(f"{sim.base_url}/v2/video/list/", params={"fields": "id"}, headers=headers, timeout=10),
        requests.post(
            f"{sim.base_url}/v2/video/query/",
            params={"fields": "id"},
            json={"filters": {"video_ids": ["1"]}},
            headers=headers,
            timeout=10,
        ),
    ):
        check_envelope(answer, "access_token_invalid", 401)


def test_only_requested_fields_come_back(creator: ConnectedAccount, check_envelope: Check) -> None:
    user = check_envelope(creator.api.user_info("display_name,video_count"), "ok", 200)["data"]["user"]
    assert set(user) == {"display_name", "video_count"}
    videos = check_envelope(creator.api.video_list("id,title", max_count=5), "ok", 200)["data"]["videos"]
    assert len(videos) == 5
    assert all(set(video) == {"id", "title"} for video in videos)
    queried = check_envelope(creator.api.video_query("view_count", [videos[0]["id"]]), "ok", 200)
    assert set(queried["data"]["videos"][0]) == {"view_count"}


def test_every_field_can_be_requested_at_once(creator: ConnectedAccount, check_envelope: Check) -> None:
    user = check_envelope(creator.api.user_info(list(USER_FIELD_SCOPES)), "ok", 200)["data"]["user"]
    assert set(user) == set(USER_FIELD_SCOPES)
    assert user["video_count"] == 30
    videos = check_envelope(creator.api.video_list(VIDEO_FIELDS, max_count=2), "ok", 200)["data"]["videos"]
    assert all(set(video) == set(VIDEO_FIELDS) for video in videos)


def test_fields_tolerate_spaces_and_repeats(creator: ConnectedAccount, check_envelope: Check) -> None:
    user = check_envelope(creator.api.user_info(" open_id , open_id,username "), "ok", 200)["data"]["user"]
    assert set(user) == {"open_id", "username"}


@pytest.fixture(scope="module")
def scoped_apis(sim: SimulatorConnection) -> Iterator[tuple[dict[str, DisplayApi], dict[str, DisplayApi]]]:
    """Per scope: a client whose token has only that scope, and one whose token has all but it."""
    open_id = sim.admin.create_account(videos=5)["open_id"]
    only = {scope: sim.display(sim.get_tokens(open_id, [scope])) for scope in SCOPES}
    without = {
        scope: sim.display(sim.get_tokens(open_id, [other for other in SCOPES if other != scope])) for scope in SCOPES
    }
    yield only, without


@pytest.mark.parametrize("field", sorted(USER_FIELD_SCOPES))
def test_each_user_field_needs_its_scope(
    scoped_apis: tuple[dict[str, DisplayApi], dict[str, DisplayApi]], check_envelope: Check, field: str
) -> None:
    only, without = scoped_apis
    scope = USER_FIELD_SCOPES[field]
    granted = check_envelope(only[scope].user_info(field), "ok", 200)
    assert field in granted["data"]["user"]
    check_envelope(without[scope].user_info(field), "scope_not_authorized", 401)


def test_one_unauthorized_field_fails_the_whole_call(
    scoped_apis: tuple[dict[str, DisplayApi], dict[str, DisplayApi]], check_envelope: Check
) -> None:
    only, _ = scoped_apis
    body = check_envelope(only["user.info.basic"].user_info("open_id,follower_count"), "scope_not_authorized", 401)
    assert "user.info.stats" in body["error"]["message"]


def test_video_endpoints_need_video_list(
    scoped_apis: tuple[dict[str, DisplayApi], dict[str, DisplayApi]], check_envelope: Check
) -> None:
    only, without = scoped_apis
    listed = check_envelope(only["video.list"].video_list("id"), "ok", 200)
    video_id = listed["data"]["videos"][0]["id"]
    check_envelope(without["video.list"].video_list("id"), "scope_not_authorized", 401)
    check_envelope(without["video.list"].video_query("id", [video_id]), "scope_not_authorized", 401)
    check_envelope(only["video.list"].user_info("open_id"), "scope_not_authorized", 401)


def test_paths_need_their_trailing_slash(sim: SimulatorConnection, creator: ConnectedAccount) -> None:
    answer = requests.get(
        f"{sim.base_url}/v2/user/info",
        params={"fields": "open_id"},
        headers=creator.tokens.headers,
        timeout=10,
        allow_redirects=False,
    )
    assert answer.status_code == 404
