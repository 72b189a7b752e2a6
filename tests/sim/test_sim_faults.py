"""Fault injection: every kind, the deterministic queue and the seeded probabilities."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tiktok_sim.testing import AdminError, ConnectedAccount, SimulatorProcess, running_simulator

Check = Callable[[requests.Response, str, int], dict[str, Any]]
INT64_MAX = 2**63 - 1


@pytest.fixture(scope="module")
def fault_sim() -> Iterator[SimulatorProcess]:
    with running_simulator(seed=13, accounts=0) as process:
        yield process


@pytest.fixture(autouse=True)
def no_faults_left(fault_sim: SimulatorProcess) -> Iterator[None]:
    yield
    fault_sim.admin.clear_faults()


@pytest.fixture
def account(fault_sim: SimulatorProcess) -> ConnectedAccount:
    return fault_sim.connected_account(videos=30)


def test_internal_error_answers_500_once(
    fault_sim: SimulatorProcess, account: ConnectedAccount, check_envelope: Check
) -> None:
    fault_sim.admin.fail_next("video_list", "internal_error")
    check_envelope(account.api.video_list("id"), "internal_error", 500)
    check_envelope(account.api.video_list("id"), "ok", 200)


def test_html_503_is_a_gateway_page_without_envelope(fault_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    fault_sim.admin.fail_next("user_info", "html_503")
    answer = account.api.user_info("open_id")
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("text/html")
    assert "503 Service Temporarily Unavailable" in answer.text
    assert "x-tt-logid" not in answer.headers


def test_injected_rate_limit(fault_sim: SimulatorProcess, account: ConnectedAccount, check_envelope: Check) -> None:
    fault_sim.admin.fail_next("video_query", "rate_limit")
    check_envelope(account.api.video_query("id", ["1"]), "rate_limit_exceeded", 429)


def test_slow_answers_after_the_delay(
    fault_sim: SimulatorProcess, account: ConnectedAccount, check_envelope: Check
) -> None:
    fault_sim.admin.set_faults("user_info", queue=[("slow", 1)], slow_seconds=0.6)
    started = time.monotonic()
    check_envelope(account.api.user_info("open_id"), "ok", 200)
    assert time.monotonic() - started >= 0.6
    started = time.monotonic()
    account.api.user_info("open_id")
    assert time.monotonic() - started < 0.5


def test_truncated_json_has_status_200(fault_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    fault_sim.admin.fail_next("video_list", "truncated")
    answer = account.api.video_list("id,title")
    assert answer.status_code == 200
    assert answer.content
    with pytest.raises(ValueError):
        json.loads(answer.content)
    complete = account.api.video_list("id,title").content
    assert len(answer.content) < len(complete)


def test_unknown_error_code_arrives_with_status_200(fault_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    fault_sim.admin.fail_next("user_info", "unknown_error_code")
    answer = account.api.user_info("open_id")
    assert answer.status_code == 200
    assert answer.json()["error"]["code"] == "sim_unknown_error"
    assert answer.json()["data"] == {}


def test_missing_data_keeps_an_ok_envelope(fault_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    fault_sim.admin.fail_next("video_list", "missing_data")
    body = account.api.video_list("id").json()
    assert "data" not in body
    assert body["error"]["code"] == "ok"


def test_wrong_types_send_strings_for_integers(fault_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    fault_sim.admin.fail_next("video_list", "wrong_types")
    data = account.api.video_list("id,create_time,view_count,like_count,duration").json()["data"]
    assert isinstance(data["cursor"], str)
    for video in data["videos"]:
        assert all(isinstance(video[name], str) for name in ("create_time", "view_count", "like_count", "duration"))
    fault_sim.admin.fail_next("user_info", "wrong_types")
    user = account.api.user_info("follower_count,is_verified").json()["data"]["user"]
    assert isinstance(user["follower_count"], str)
    assert isinstance(user["is_verified"], bool)


def test_int64_overflow(fault_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    fault_sim.admin.fail_next("video_query", "int64_overflow")
    ids = [video["id"] for video in account.api.video_list("id").json()["data"]["videos"]]
    videos = account.api.video_query("id,view_count", ids).json()["data"]["videos"]
    assert all(video["view_count"] > INT64_MAX for video in videos)
    fault_sim.admin.fail_next("user_info", "int64_overflow")
    assert account.api.user_info("follower_count").json()["data"]["user"]["follower_count"] > INT64_MAX


def test_nul_bytes_in_text(fault_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    fault_sim.admin.fail_next("video_list", "nul_bytes")
    videos = account.api.video_list("title,video_description").json()["data"]["videos"]
    assert all("\x00" in video["title"] and "\x00" in video["video_description"] for video in videos)
    fault_sim.admin.fail_next("user_info", "nul_bytes")
    assert "\x00" in account.api.user_info("display_name").json()["data"]["user"]["display_name"]


def test_long_strings(fault_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    fault_sim.admin.fail_next("video_list", "long_strings")
    videos = account.api.video_list("title,video_description").json()["data"]["videos"]
    assert all(len(video["title"]) == len(video["video_description"]) == 10_000 for video in videos)


def test_non_numeric_ids(fault_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    fault_sim.admin.fail_next("video_list", "non_numeric_id")
    videos = account.api.video_list("id").json()["data"]["videos"]
    assert videos and all(not video["id"].isdigit() for video in videos)


def test_stuck_cursor_repeats_the_request_cursor(fault_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    first = account.api.video_list("id", max_count=5).json()["data"]
    fault_sim.admin.fail_next("video_list", "stuck_cursor")
    second = account.api.video_list("id", max_count=5, cursor=first["cursor"]).json()["data"]
    assert second["cursor"] == first["cursor"] and second["has_more"] is True
    # A correct client notices the cursor did not advance and stops instead of looping.
    fault_sim.admin.fail_next("video_list", "stuck_cursor", count=2)
    videos, pages = account.api.list_all("id", max_count=5)
    assert pages == 2 and len(videos) == 10


def test_endless_has_more_gives_empty_pages(fault_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    fault_sim.admin.set_faults("video_list", probabilities={"endless_has_more": 1.0})
    cursor = None
    cursors = []
    for _ in range(5):
        data = account.api.video_list("id", cursor=cursor).json()["data"]
        assert data["videos"] == [] and data["has_more"] is True
        cursors.append(data["cursor"])
        cursor = data["cursor"]
    assert cursors == sorted(cursors, reverse=True) and len(set(cursors)) == 5


def test_oauth_faults(fault_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    fault_sim.admin.set_faults(
        "oauth_token",
        queue=[("internal_error", 1), ("html_503", 1), ("missing_data", 1), ("wrong_types", 1), ("truncated", 1)],
    )
    failed = fault_sim.session.post(fault_sim.token_url, data={"grant_type": "refresh_token"}, timeout=10)
    assert failed.status_code == 500 and failed.json()["error"] == "server_error"
    gateway = fault_sim.session.post(fault_sim.token_url, data={"grant_type": "refresh_token"}, timeout=10)
    assert gateway.status_code == 503 and gateway.headers["content-type"].startswith("text/html")
    missing = fault_sim.refresh(account.tokens.refresh_token)
    assert "access_token" not in missing and "refresh_token" in missing
    wrong = fault_sim.refresh(missing["refresh_token"])
    assert isinstance(wrong["expires_in"], str)
    truncated = fault_sim.session.post(
        fault_sim.token_url,
        data={
            "client_key": fault_sim.client_key,
            "client_secret": fault_sim.client_secret,
            "grant_type": "refresh_token",
            "refresh_token": wrong["refresh_token"],
        },
        timeout=10,
    )
    with pytest.raises(ValueError):
        json.loads(truncated.content)


def test_the_queue_runs_in_order_then_stops(fault_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    fault_sim.admin.set_faults("user_info", queue={"internal_error": 2, "html_503": 1})
    assert fault_sim.admin.faults()["user_info"]["next"] == ["internal_error", "internal_error", "html_503"]
    statuses = [account.api.user_info("open_id").status_code for _ in range(5)]
    assert statuses == [500, 500, 503, 200, 200]
    faults = fault_sim.admin.stats()["endpoints"]["user_info"]["faults"]
    assert faults["internal_error"] >= 2 and faults["html_503"] >= 1


def test_pass_lets_queued_requests_through(fault_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    fault_sim.admin.set_faults("video_list", queue=[("pass", 2), ("internal_error", 1)])
    statuses = [account.api.video_list("id").status_code for _ in range(4)]
    assert statuses == [200, 200, 500, 200]


def test_probabilities_are_reproducible_from_the_seed() -> None:
    def statuses() -> list[int]:
        with running_simulator(seed=21, accounts=0) as process:
            api = process.connected_account(videos=3).api
            process.admin.set_faults("user_info", probabilities={"internal_error": 0.3, "html_503": 0.2})
            return [api.user_info("open_id").status_code for _ in range(40)]

    first, second = statuses(), statuses()
    assert first == second
    assert {200, 500, 503} == set(first)


@pytest.mark.parametrize(
    ("endpoint", "kwargs"),
    [
        ("user_info", {"queue": [("stuck_cursor", 1)]}),
        ("video_list", {"queue": [("no_such_kind", 1)]}),
        ("nowhere", {"queue": [("internal_error", 1)]}),
        ("video_list", {"probabilities": {"internal_error": 0.7, "html_503": 0.5}}),
    ],
    ids=["not-applicable", "unknown-kind", "unknown-endpoint", "sum-above-one"],
)
def test_bad_fault_settings_are_refused(fault_sim: SimulatorProcess, endpoint: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(AdminError) as refused:
        fault_sim.admin.set_faults(endpoint, **kwargs)
    assert refused.value.status == 400
