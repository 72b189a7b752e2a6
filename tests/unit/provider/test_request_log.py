"""The request log: one line per HTTP request on ``tiktok_provider.requests``, never a token or a code."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from canned_tiktok import OPEN_ID, SECRET, Canned, account, fail, page, user

from tiktok_provider import errors
from tiktok_provider.client import REQUEST_LOG, describe_request

PLANTED = ("act.current-access-token", "rft.current-refresh-token", "act.new-planted", "rft.new-planted", SECRET)


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == REQUEST_LOG.name]


def test_one_line_per_request_with_status_log_id_and_attempt(make_hook: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=REQUEST_LOG.name)
    answers = [
        fail(500, "internal_error", **{"x-tt-logid": "LOG500"}),
        Canned(200, user().body, {"x-tt-logid": "LOG200"}),
    ]
    hook, _, _, _ = make_hook(*answers)
    hook.get_user_info(OPEN_ID, ["display_name", "follower_count"])
    lines = _lines(caplog)
    assert len(lines) == 2
    assert lines[0].startswith(
        f"TikTok request GET /v2/user/info/ account={OPEN_ID} fields=2 -> HTTP 500 log_id=LOG500 "
    )
    assert lines[0].endswith("attempt=1")
    assert "-> HTTP 200 log_id=LOG200" in lines[1]
    assert lines[1].endswith("attempt=2")
    assert all(" ms attempt=" in line for line in lines)


def test_a_page_line_names_the_cursor_and_a_query_line_the_number_of_ids(
    make_hook: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=REQUEST_LOG.name)
    hook, _, _, _ = make_hook(page(["v1"], cursor=111, has_more=True), page(["v2"], cursor=None, has_more=False))
    list(hook.iter_video_pages(OPEN_ID))
    lines = _lines(caplog)
    assert "POST /v2/video/list/" in lines[0] and "cursor=" not in lines[0]
    assert "cursor=111" in lines[1]
    assert describe_request(None, {"filters": {"video_ids": ["a", "b", "c"]}}, None) == "ids=3"


def test_no_line_carries_a_token_or_the_client_secret(make_hook: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    grant = {
        "open_id": OPEN_ID,
        "access_token": "act.new-planted",
        "expires_in": 86400,
        "refresh_token": "rft.new-planted",
        "refresh_expires_in": 31536000,
        "scope": "user.info.basic,video.list",
    }
    hook, script, _, _ = make_hook(fail(401, "access_token_invalid"), Canned(200, grant), user(), tokens=account())
    hook.get_user_info(OPEN_ID, ["display_name"])
    lines = _lines(caplog)
    assert script.paths() == ["/v2/user/info/", "/v2/oauth/token/", "/v2/user/info/"]
    assert len(lines) == 3
    assert "POST /v2/oauth/token/ account=acct-1 grant_type=refresh_token -> HTTP 200" in lines[1]
    everything = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for secret in PLANTED:
        assert secret not in everything
    assert "Bearer" not in everything


def test_a_request_that_never_got_an_answer_is_logged_too(make_hook: Any, caplog: pytest.LogCaptureFixture) -> None:
    import requests

    caplog.set_level(logging.INFO, logger=REQUEST_LOG.name)
    hook, script, _, _ = make_hook()

    def refuse(request: Any, **kwargs: Any) -> Any:
        raise requests.ConnectionError("refused")

    script.send = refuse  # type: ignore[method-assign]
    with pytest.raises(errors.TikTokNetworkError):
        hook.get_user_info(OPEN_ID, ["display_name"])
    lines = _lines(caplog)
    assert len(lines) == 4  # max_attempts in the unit connection
    assert all("-> failed (ConnectionError) log_id=none" in line for line in lines)
    assert [line.rsplit("=", 1)[1] for line in lines] == ["1", "2", "3", "4"]


def test_off_when_the_logger_is_above_info(make_hook: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=REQUEST_LOG.name)
    hook, _, _, _ = make_hook(user())
    hook.get_user_info(OPEN_ID, ["display_name"])
    assert _lines(caplog) == []


def test_the_connection_extra_request_log_false_turns_it_off(make_hook: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=REQUEST_LOG.name)
    hook, _, _, _ = make_hook(user(), request_log="false")
    hook.get_user_info(OPEN_ID, ["display_name"])
    assert _lines(caplog) == []
    hook, _, _, _ = make_hook(user(), request_log=True)
    hook.get_user_info(OPEN_ID, ["display_name"])
    assert len(_lines(caplog)) == 1
