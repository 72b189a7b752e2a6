"""``video/list`` pagination (cursor rule, imperfections) and ``video/query`` filtering."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiktok_sim.testing import ConnectedAccount, DisplayApi, SimulatorConnection, SimulatorProcess, running_simulator

Check = Callable[[requests.Response, str, int], dict[str, Any]]


def raw_pages(api: DisplayApi, max_count: int, limit: int = 500) -> list[dict[str, Any]]:
    """Follow the cursor like a client that trusts it; return every page's ``data``."""
    pages: list[dict[str, Any]] = []
    cursor: int | None = None
    while len(pages) < limit:
        data = api.video_list("id,create_time", max_count=max_count, cursor=cursor).json()["data"]
        pages.append(data)
        if not data["has_more"] or (cursor is not None and data["cursor"] >= cursor):
            break
        cursor = data["cursor"]
    return pages


def test_default_pages_are_full_newest_first_and_cover_everything_once(
    sim: SimulatorConnection, creator: ConnectedAccount
) -> None:
    expected = sim.admin.video_ids(creator.open_id)
    assert len(expected) == 30
    pages = raw_pages(creator.api, max_count=7)
    assert [len(page["videos"]) for page in pages] == [7, 7, 7, 7, 2]
    assert [page["has_more"] for page in pages] == [True] * 4 + [False]
    seen = [video["id"] for page in pages for video in page["videos"]]
    assert seen == expected
    times = [video["create_time"] for page in pages for video in page["videos"]]
    assert times == sorted(times, reverse=True)


def test_the_cursor_is_the_oldest_videos_time_in_milliseconds(creator: ConnectedAccount) -> None:
    pages = raw_pages(creator.api, max_count=5)
    for page in pages:
        oldest = page["videos"][-1]["create_time"]
        assert page["cursor"] // 1000 == oldest
    for earlier, later in itertools.pairwise(pages):
        assert later["videos"][0]["create_time"] <= earlier["videos"][-1]["create_time"]


def test_videos_sharing_a_second_are_each_listed_once_even_one_per_page(
    sim: SimulatorConnection, creator: ConnectedAccount
) -> None:
    truth = sim.admin.videos(creator.open_id)
    seconds = [video["create_time"] for video in truth]
    assert len(set(seconds)) < len(seconds), "the population should contain same-second videos"
    pages = raw_pages(creator.api, max_count=1)
    assert [video["id"] for page in pages for video in page["videos"]] == [video["id"] for video in truth]


def test_a_callers_own_timestamp_returns_videos_posted_strictly_before_it(
    sim: SimulatorConnection, creator: ConnectedAccount
) -> None:
    truth = sim.admin.videos(creator.open_id)
    pivot = truth[10]["create_time"]
    answer = creator.api.video_list("id,create_time", max_count=20, cursor=pivot * 1000).json()["data"]
    assert answer["videos"]
    assert all(video["create_time"] < pivot for video in answer["videos"])
    expected = [video["id"] for video in truth if video["create_time"] < pivot][:20]
    assert [video["id"] for video in answer["videos"]] == expected
    inclusive = creator.api.video_list("id,create_time", max_count=20, cursor=(pivot + 1) * 1000).json()["data"]
    assert truth[10]["id"] in [video["id"] for video in inclusive["videos"]]


def test_an_account_without_videos_lists_nothing(sim: SimulatorConnection, check_envelope: Check) -> None:
    empty = sim.connected_account(videos=0)
    data = check_envelope(empty.api.video_list("id"), "ok", 200)["data"]
    assert data == {"videos": [], "cursor": 0, "has_more": False}
    assert empty.api.user_info("video_count").json()["data"]["user"]["video_count"] == 0


def test_deleted_and_private_videos_leave_list_count_and_query(
    sim: SimulatorConnection, creator: ConnectedAccount
) -> None:
    ids = sim.admin.video_ids(creator.open_id)
    deleted, private = ids[3], ids[4]
    sim.admin.delete_video(deleted)
    sim.admin.privatise_video(private)
    listed = [video["id"] for video in creator.api.list_all("id")[0]]
    assert deleted not in listed and private not in listed
    assert len(listed) == 28
    assert creator.api.user_info("video_count").json()["data"]["user"]["video_count"] == 28
    assert sim.admin.video(deleted)["status"] == "deleted"
    assert sim.admin.video(private)["status"] == "private"
    sim.admin.privatise_video(private, private=False)
    assert private in [video["id"] for video in creator.api.list_all("id")[0]]


def test_added_videos_come_first(sim: SimulatorConnection, creator: ConnectedAccount) -> None:
    new_ids = sim.admin.add_videos(creator.open_id, 2)
    first_page = creator.api.video_list("id", max_count=2).json()["data"]["videos"]
    assert {video["id"] for video in first_page} == set(new_ids)
    assert all(len(video_id) == 19 and video_id.isdigit() for video_id in new_ids)
    assert creator.api.user_info("video_count").json()["data"]["user"]["video_count"] == 32


def test_query_returns_own_public_videos_in_request_order_and_omits_the_rest(
    sim: SimulatorConnection, creator: ConnectedAccount, check_envelope: Check
) -> None:
    mine = sim.admin.video_ids(creator.open_id)
    other = sim.connected_account(videos=3)
    theirs = sim.admin.video_ids(other.open_id)[0]
    deleted, private = mine[5], mine[6]
    sim.admin.delete_video(deleted)
    sim.admin.privatise_video(private)
    full_width = mine[1].translate({ord(digit): 0xFF10 + int(digit) for digit in "0123456789"})
    asked = [mine[2], theirs, deleted, mine[0], private, "not-a-number", "1234567890123456789", full_width]
    asked += [mine[2], mine[9]]
    body = check_envelope(creator.api.video_query("id,title", asked), "ok", 200)
    assert [video["id"] for video in body["data"]["videos"]] == [mine[2], mine[0], mine[9]]
    assert other.api.video_query("id", [theirs]).json()["data"]["videos"] == [{"id": theirs}]


@pytest.fixture(scope="module")
def imperfect_sim() -> Iterator[SimulatorProcess]:
    """A simulator whose page imperfections these tests configure."""
    with running_simulator(seed=11, accounts=0) as process:
        yield process


@pytest.mark.parametrize(
    ("setting", "symptom"),
    [("page_short_prob", "short"), ("page_empty_prob", "empty"), ("page_duplicate_prob", "duplicate")],
)
def test_each_imperfection_shows_and_a_correct_client_still_gets_every_video_once(
    imperfect_sim: SimulatorProcess, setting: str, symptom: str
) -> None:
    account = imperfect_sim.connected_account(videos=60)
    expected = imperfect_sim.admin.video_ids(account.open_id)
    imperfect_sim.admin.set_config(**{setting: 0.8})
    try:
        pages = raw_pages(account.api, max_count=10)
        videos, _ = account.api.list_all("id", max_count=10)
    finally:
        imperfect_sim.admin.set_config(**{setting: 0.0})
    seen = [video["id"] for page in pages for video in page["videos"]]
    if symptom == "short":
        assert any(0 < len(page["videos"]) < 10 and page["has_more"] for page in pages)
    elif symptom == "empty":
        assert any(not page["videos"] and page["has_more"] for page in pages)
    else:
        assert len(seen) > len(set(seen))
    assert set(seen) == set(expected)
    assert [video["id"] for video in videos] == expected
    cursors = [page["cursor"] for page in pages]
    assert cursors == sorted(cursors, reverse=True) and len(set(cursors)) == len(cursors)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    max_count=st.integers(1, 20),
    short=st.sampled_from([0.0, 0.3, 0.9]),
    empty=st.sampled_from([0.0, 0.3]),
    duplicate=st.sampled_from([0.0, 0.3, 0.6]),
)
def test_any_mix_of_imperfections_keeps_exactly_once_delivery(
    imperfect_sim: SimulatorProcess, max_count: int, short: float, empty: float, duplicate: float
) -> None:
    account = imperfect_sim.connected_account(videos=45)
    expected = imperfect_sim.admin.video_ids(account.open_id)
    imperfect_sim.admin.set_config(page_short_prob=short, page_empty_prob=empty, page_duplicate_prob=duplicate)
    try:
        videos, pages = account.api.list_all("id", max_count=max_count)
    finally:
        imperfect_sim.admin.set_config(page_short_prob=0.0, page_empty_prob=0.0, page_duplicate_prob=0.0)
    assert [video["id"] for video in videos] == expected
    assert pages >= math.ceil(45 / max_count)


def test_future_videos_appear_when_the_clock_reaches_them(imperfect_sim: SimulatorProcess) -> None:
    account = imperfect_sim.connected_account(videos=2)
    now = int(imperfect_sim.admin.now())
    [scheduled] = imperfect_sim.admin.add_videos(account.open_id, create_time=now + 3600)
    assert scheduled not in [video["id"] for video in account.api.list_all("id")[0]]
    assert account.api.video_query("id", [scheduled]).json()["data"]["videos"] == []
    assert imperfect_sim.admin.video(scheduled)["status"] == "scheduled"
    imperfect_sim.admin.advance_clock(3601)
    assert account.api.video_list("id", max_count=1).json()["data"]["videos"] == [{"id": scheduled}]


def test_a_100k_video_account_builds_fast_and_lists_correctly(sim: SimulatorConnection) -> None:
    started = time.perf_counter()
    big = sim.connected_account(videos=100_000)
    assert time.perf_counter() - started < 5
    expected = sim.admin.video_ids(big.open_id)
    assert len(expected) == len(set(expected)) == 100_000
    assert big.api.user_info("video_count").json()["data"]["user"]["video_count"] == 100_000
    seen: list[str] = []
    cursor: int | None = None
    for _ in range(3):
        data = big.api.video_list("id,view_count", max_count=20, cursor=cursor).json()["data"]
        seen += [video["id"] for video in data["videos"]]
        assert data["has_more"]
        cursor = data["cursor"]
    assert seen == expected[:60]
    middle = sim.admin.video(expected[50_000])["video"]
    resumed = big.api.video_list("id", max_count=20, cursor=(middle["create_time"] + 1) * 1000).json()["data"]
    resumed_ids = [video["id"] for video in resumed["videos"]]
    assert expected[50_000] in resumed_ids
    assert time.perf_counter() - started < 15
