"""A video/list or video/query answer that lacks what it must carry is a contract break, never "no videos".

Read as an empty list, ``{"data": {}, "error": {"code": "ok"}}`` made a full sync take every stored
video of the account for removed, and the cover refresh every requested one (audit item 6).
"""

from __future__ import annotations

from typing import Any

import pytest

from tiktok_provider import errors
from tiktok_provider.paginator import VIDEO_LIST, VIDEO_QUERY
from tiktok_provider.responses import Envelope, Issues, parse_video_page, parse_video_query

LOG_ID = "20260301093000ABCDEF0123456789ABCD"
VIDEO = {"id": "7400000000000000001", "title": "t"}


def page(data: dict[str, Any]) -> Any:
    envelope = Envelope(data=data, log_id=LOG_ID, http_status=200)
    return parse_video_page(envelope, ["id", "title"], endpoint=VIDEO_LIST, open_id="acct-1", issues=Issues())


def query(data: dict[str, Any]) -> Any:
    envelope = Envelope(data=data, log_id=LOG_ID, http_status=200)
    return parse_video_query(
        envelope, ["id", "title"], requested=[VIDEO["id"]], endpoint=VIDEO_QUERY, open_id="acct-1", issues=Issues()
    )


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({}, "data.videos is missing"),
        ({"has_more": False}, "data.videos is missing"),
        ({"has_more": False, "cursor": 1}, "data.videos is missing"),
        ({"videos": []}, "data.has_more is missing"),
        ({"videos": [VIDEO], "cursor": 1}, "data.has_more is missing"),
        ({"videos": [VIDEO], "has_more": True}, "has_more is true but no cursor"),
        ({"videos": None, "has_more": False}, "data.videos is not a list"),
        ({"videos": [], "has_more": None}, "not a boolean"),
    ],
)
def test_a_list_answer_without_videos_or_has_more_is_a_contract_break(data: dict[str, Any], says: str) -> None:
    with pytest.raises(errors.TikTokMalformedResponse) as excinfo:
        page(data)
    exc = excinfo.value
    assert not exc.retryable
    assert says in str(exc)
    for part in ("acct-1", VIDEO_LIST, LOG_ID, "support"):
        assert part in str(exc)


def test_a_complete_list_answer_still_parses() -> None:
    assert page({"videos": [], "has_more": False}).videos == []  # the account has no (more) videos
    last = page({"videos": [VIDEO], "has_more": False})  # the last page may leave the cursor out
    assert (last.videos, last.cursor, last.has_more) == ([VIDEO], None, False)
    assert page({"videos": [VIDEO], "has_more": True, "cursor": 5}).cursor == 5


@pytest.mark.parametrize(("data", "says"), [({}, "data.videos is missing"), ({"videos": {}}, "not a list")])
def test_a_query_answer_without_videos_is_a_contract_break(data: dict[str, Any], says: str) -> None:
    with pytest.raises(errors.TikTokMalformedResponse) as excinfo:
        query(data)
    assert not excinfo.value.retryable
    for part in (says, "acct-1", VIDEO_QUERY, LOG_ID):
        assert part in str(excinfo.value)


def test_a_complete_query_answer_still_parses() -> None:
    assert query({"videos": []}).videos == []  # every requested id is gone: a valid answer
    other = {"id": "7400000000000000002", "title": "not requested"}
    answer = query({"videos": [VIDEO, other, {"id": "id_74"}]})
    assert (answer.videos, answer.skipped) == ([VIDEO], 1)


@pytest.mark.integration
@pytest.mark.parametrize(("endpoint", "path"), [("video_list", VIDEO_LIST), ("video_query", VIDEO_QUERY)])
def test_the_hook_fails_once_on_empty_data_from_the_simulator(hook, sim, connect_account, endpoint, path) -> None:
    open_id = connect_account(videos=25)
    ids = sim.admin.video_ids(open_id)
    sim.admin.set_faults(endpoint, queue=[("pass", 1), ("empty_data", 1)])
    sim.admin.reset_stats()
    with pytest.raises(errors.TikTokMalformedResponse) as excinfo:
        if endpoint == "video_list":
            list(hook.iter_video_pages(open_id))
        else:
            list(hook.query_videos(open_id, ids))
    exc = excinfo.value
    assert sim.admin.stats()["endpoints"][endpoint]["requests"] == 2, "not retried"
    assert hook.sleeps == []
    assert exc.log_id and len(exc.log_id) == 34
    for part in (open_id, path, exc.log_id, "data.videos is missing"):
        assert part in str(exc)
