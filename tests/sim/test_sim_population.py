"""The generated population: deterministic from the seed, realistic shapes, counts that grow."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import pytest

from tiktok_sim.fields import VIDEO_FIELDS
from tiktok_sim.testing import SimulatorConnection, SimulatorProcess, running_simulator

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
STABLE_FIELDS = [name for name in VIDEO_FIELDS if not name.endswith("_count") and name != "cover_image_url"]


def has_emoji(text: str) -> bool:
    return any(unicodedata.category(char) == "So" for char in text)


def snapshot(process: SimulatorProcess, at: float) -> dict[str, Any]:
    accounts = process.admin.accounts()
    return {
        "accounts": accounts,
        "videos": {account["open_id"]: process.admin.videos(account["open_id"], at=at) for account in accounts},
        "users": {
            account["open_id"]: {
                name: value
                for name, value in process.admin.account(account["open_id"])["user"].items()
                if not name.endswith("_count") and not name.startswith("avatar")  # signed per process
            }
            for account in accounts
        },
    }


def test_the_same_seed_gives_the_same_data_and_another_seed_does_not() -> None:
    at = 1_780_000_000.0
    with running_simulator(seed=77, accounts=3, videos=60) as first:
        one = snapshot(first, at)
        page_one = first.display(first.get_tokens(one["accounts"][0]["open_id"])).video_list(
            STABLE_FIELDS, max_count=20
        )
    with running_simulator(seed=77, accounts=3, videos=60) as second:
        two = snapshot(second, at)
        page_two = second.display(second.get_tokens(two["accounts"][0]["open_id"])).video_list(
            STABLE_FIELDS, max_count=20
        )
    with running_simulator(seed=78, accounts=3, videos=60) as other:
        three = snapshot(other, at)
    assert one == two
    assert page_one.json()["data"] == page_two.json()["data"]
    assert [a["open_id"] for a in one["accounts"]] != [a["open_id"] for a in three["accounts"]]
    assert one["videos"] != three["videos"]


def test_start_accounts_split_the_videos(sim: SimulatorConnection) -> None:
    accounts = sim.admin.accounts()[:3]
    assert [account["index"] for account in accounts] == [0, 1, 2]
    assert [account["videos_total"] for account in accounts] == [120, 60, 40]


@pytest.fixture(scope="module")
def many(sim: SimulatorConnection) -> list[dict[str, Any]]:
    return [sim.admin.account(sim.admin.create_account(videos=0)["open_id"]) for _ in range(20)]


def test_profiles_look_real(many: list[dict[str, Any]]) -> None:
    users = [account["user"] for account in many]
    assert all(UUID.match(user["open_id"]) and UUID.match(user["union_id"]) for user in users)
    assert len({user["username"] for user in users}) == 20
    assert any(has_emoji(user["bio_description"]) for user in users)
    assert any(has_emoji(user["display_name"]) for user in users)
    assert any(user["is_verified"] for user in users) and not all(user["is_verified"] for user in users)
    assert all(user["profile_deep_link"].startswith("https://vm.tiktok.com/") for user in users)
    assert all(0 <= user[name] <= INT32_MAX for user in users for name in ("follower_count", "likes_count"))


@pytest.fixture(scope="module")
def videos(sim: SimulatorConnection) -> list[dict[str, Any]]:
    open_id = sim.admin.create_account(videos=400)["open_id"]
    return sim.admin.videos(open_id)


def test_video_ids_are_unique_19_digit_strings_made_from_the_creation_time(
    sim: SimulatorConnection, videos: list[dict[str, Any]]
) -> None:
    ids = [video["id"] for video in videos]
    assert all(isinstance(video_id, str) and len(video_id) == 19 and video_id.isdigit() for video_id in ids)
    assert all(int(video["id"]) >> 32 == video["create_time"] for video in videos)
    every_id = {video_id for account in sim.admin.accounts() for video_id in sim.admin.video_ids(account["open_id"])}
    assert len(every_id) == sum(account["video_count"] for account in sim.admin.accounts())


def test_videos_span_several_years(videos: list[dict[str, Any]]) -> None:
    times = [video["create_time"] for video in videos]
    assert max(times) - min(times) > 3 * 365 * 86400


def test_captions_are_at_most_150_characters_with_emoji(videos: list[dict[str, Any]]) -> None:
    texts = [video[name] for video in videos for name in ("title", "video_description")]
    assert all(len(text) <= 150 for text in texts)
    assert any(len(text) == 150 for text in texts)
    assert sum(has_emoji(text) for text in texts) > len(texts) / 2
    assert any(video["title"] == "" for video in videos)


def test_counts_fit_their_types_and_some_views_exceed_int32(videos: list[dict[str, Any]]) -> None:
    for video in videos:
        assert all(0 <= video[name] <= INT32_MAX for name in ("like_count", "comment_count", "share_count"))
        assert 0 <= video["view_count"] <= INT64_MAX
        assert all(0 < video[name] <= INT32_MAX for name in ("duration", "height", "width"))
    assert any(video["view_count"] > INT32_MAX for video in videos)


def test_counts_grow_with_the_simulated_clock() -> None:
    with running_simulator(seed=4, accounts=1, videos=40) as process:
        account = process.connected_account(videos=40)
        fields = "id,view_count,like_count,comment_count,share_count"
        before = account.api.list_all(fields)[0]
        user_before = account.api.user_info("follower_count,likes_count,following_count").json()["data"]["user"]
        process.admin.advance_clock(30 * 86400)
        api = process.display(process.get_tokens(account.open_id))
        after = {video["id"]: video for video in api.list_all(fields)[0]}
        user_after = api.user_info("follower_count,likes_count,following_count").json()["data"]["user"]
    for video in before:
        later = after[video["id"]]
        assert later["view_count"] > video["view_count"]
        for name in ("like_count", "comment_count", "share_count"):
            assert later[name] >= video[name]
    assert user_after["follower_count"] > user_before["follower_count"]
    assert user_after["likes_count"] > user_before["likes_count"]
    assert user_after["following_count"] >= user_before["following_count"]
