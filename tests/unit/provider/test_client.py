"""The client over canned answers: the retry policy, plain http refused for bearer tokens, no secret in errors."""

from __future__ import annotations

from typing import Any

import pytest
from canned_tiktok import OPEN_ID, SECRET, Canned, fail, user

from tiktok_provider import errors


def test_a_429_with_retry_after_is_waited_out_then_answered(make_hook: Any) -> None:
    hook, script, _, sleeps = make_hook(fail(429, "rate_limit_exceeded", **{"Retry-After": "7"}), user())
    assert hook.get_user_info(OPEN_ID, ["display_name", "follower_count"]) == {
        "display_name": "Ada",
        "follower_count": 10,
    }
    assert sleeps == [7.0]
    assert hook.retries["/v2/user/info/"] == 1
    assert script.paths() == ["/v2/user/info/", "/v2/user/info/"]


def test_retry_after_is_capped_by_max_backoff(make_hook: Any) -> None:
    hook, _, _, sleeps = make_hook(fail(429, "rate_limit_exceeded", **{"Retry-After": "3600"}), user())
    hook.get_user_info(OPEN_ID, ["display_name"])
    assert sleeps == [30.0]


def test_server_errors_stop_after_max_attempts_with_the_last_log_id(make_hook: Any) -> None:
    answers = [fail(500, "internal_error", log_id=f"log-{n}") for n in range(4)]
    hook, script, _, sleeps = make_hook(*answers)
    with pytest.raises(errors.TikTokServerError) as caught:
        hook.get_user_info(OPEN_ID, ["display_name"])
    assert len(script.requests) == 4
    assert len(sleeps) == 3
    assert all(0 <= s <= 30 for s in sleeps)
    assert caught.value.log_id == "log-3"
    assert OPEN_ID in str(caught.value)


def test_invalid_params_is_not_retried(make_hook: Any) -> None:
    hook, script, _, sleeps = make_hook(fail(400, "invalid_params"))
    with pytest.raises(errors.TikTokInvalidParams):
        hook.get_user_info(OPEN_ID, ["display_name"])
    assert len(script.requests) == 1
    assert sleeps == []


def test_an_html_error_page_is_a_retryable_transport_fault(make_hook: Any) -> None:
    hook, script, _, _ = make_hook(Canned(502, b"<html>Bad gateway</html>"), user())
    assert hook.get_user_info(OPEN_ID, ["display_name"]) == {"display_name": "Ada"}
    assert len(script.requests) == 2


def test_a_bearer_token_never_goes_over_plain_http_to_a_remote_host(make_hook: Any) -> None:
    hook, script, _, _ = make_hook(host="http://tiktok.test")
    with pytest.raises(errors.TikTokConfigError):
        hook.get_user_info(OPEN_ID, ["display_name"])
    assert script.requests == []


def test_no_secret_or_token_in_an_error_message(make_hook: Any) -> None:
    hook, _, _, _ = make_hook(*[fail(500, "internal_error")] * 4)
    with pytest.raises(errors.TikTokError) as caught:
        hook.get_user_info(OPEN_ID, ["display_name"])
    text = str(caught.value)
    for secret in (SECRET, "act.current-access-token", "rft.current-refresh-token"):
        assert secret not in text
