"""The empty_data and no_videos faults: an ok envelope with an empty data object, or with no videos."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tiktok_sim.faults import kinds_for
from tiktok_sim.testing import AdminError, ConnectedAccount, SimulatorProcess, running_simulator


@pytest.fixture(scope="module")
def fault_sim() -> Iterator[SimulatorProcess]:
    with running_simulator(seed=17, accounts=0) as process:
        yield process


@pytest.fixture
def account(fault_sim: SimulatorProcess) -> Iterator[ConnectedAccount]:
    yield fault_sim.connected_account(videos=30)
    fault_sim.admin.clear_faults()


def test_empty_data_is_an_ok_envelope_with_an_empty_data_object(
    fault_sim: SimulatorProcess, account: ConnectedAccount
) -> None:
    ids = [v["id"] for v in account.api.video_list("id", max_count=5).json()["data"]["videos"]]
    fault_sim.admin.fail_next("video_list", "empty_data")
    fault_sim.admin.fail_next("video_query", "empty_data")
    fault_sim.admin.fail_next("user_info", "empty_data")
    for answer in (account.api.video_list("id"), account.api.video_query("id", ids), account.api.user_info("open_id")):
        assert answer.status_code == 200
        body = answer.json()
        assert body["error"]["code"] == "ok"
        assert body["data"] == {}
    # One request each: the next answers are whole again.
    assert len(account.api.video_query("id", ids).json()["data"]["videos"]) == 5
    assert account.api.video_list("id").json()["data"]["has_more"] is True


def test_empty_data_applies_to_the_display_endpoints_only(fault_sim: SimulatorProcess) -> None:
    assert all("empty_data" in kinds_for(e) for e in ("user_info", "video_list", "video_query"))
    with pytest.raises(AdminError):
        fault_sim.admin.fail_next("oauth_token", "empty_data")


def test_no_videos_is_a_well_formed_answer_that_leaves_every_live_video_out(
    fault_sim: SimulatorProcess, account: ConnectedAccount
) -> None:
    ids = [v["id"] for v in account.api.video_list("id", max_count=5).json()["data"]["videos"]]
    fault_sim.admin.fail_next("video_list", "no_videos")
    fault_sim.admin.fail_next("video_query", "no_videos")
    listed = account.api.video_list("id", max_count=5).json()
    assert listed["error"]["code"] == "ok"
    assert listed["data"]["videos"] == [] and listed["data"]["has_more"] is False
    assert isinstance(listed["data"]["cursor"], int)
    queried = account.api.video_query("id", ids).json()
    assert (queried["error"]["code"], queried["data"]) == ("ok", {"videos": []})
    assert len(account.api.video_query("id", ids).json()["data"]["videos"]) == 5, "the videos are live"
    with pytest.raises(AdminError):
        fault_sim.admin.fail_next("user_info", "no_videos")
