"""Auth over canned answers and an in-memory token store: where a token is refreshed, scopes, revoke."""

from __future__ import annotations

from typing import Any

import pytest
from canned_tiktok import OPEN_ID, Canned, account, fail, user

from tiktok_provider import errors


def test_a_rejected_access_token_is_refreshed_once_and_the_call_repeated(make_hook: Any) -> None:
    grant = {
        "open_id": OPEN_ID,
        "access_token": "act.new-access-token",
        "expires_in": 86400,
        "refresh_token": "rft.new-refresh-token",
        "refresh_expires_in": 31536000,
        "scope": "user.info.basic,video.list",
        "token_type": "Bearer",
    }
    hook, script, store, _ = make_hook(fail(401, "access_token_invalid"), Canned(200, grant), user())
    assert hook.get_user_info(OPEN_ID, ["display_name"]) == {"display_name": "Ada"}
    assert script.paths() == ["/v2/user/info/", "/v2/oauth/token/", "/v2/user/info/"]
    assert script.requests[0].headers["Authorization"] == "Bearer act.current-access-token"
    assert script.requests[2].headers["Authorization"] == "Bearer act.new-access-token"
    assert store.refreshes == 1
    assert store.tokens[OPEN_ID].refresh_token == "rft.new-refresh-token"


def test_an_access_token_about_to_expire_is_refreshed_before_the_call(make_hook: Any) -> None:
    grant = {
        "open_id": OPEN_ID,
        "access_token": "act.fresh",
        "expires_in": 86400,
        "refresh_token": "rft.fresh",
        "refresh_expires_in": 31536000,
        "scope": "user.info.basic,video.list",
    }
    hook, script, store, _ = make_hook(Canned(200, grant), user(), tokens=account(expires_in=60))
    hook.get_user_info(OPEN_ID, ["display_name"])
    assert script.paths() == ["/v2/oauth/token/", "/v2/user/info/"]
    assert store.refreshes == 1


def test_fields_beyond_the_granted_scopes_are_refused_before_sending(make_hook: Any) -> None:
    hook, script, _, _ = make_hook(tokens=account(scopes=("user.info.basic",)))
    with pytest.raises(errors.TikTokScopeError) as caught:
        list(hook.iter_video_pages(OPEN_ID))
    assert "video.list" in str(caught.value)
    assert script.requests == []


def test_a_revoke_bounded_in_time_makes_one_try(make_hook: Any) -> None:
    hook, script, _, sleeps = make_hook(*[fail(500, "internal_error")] * 4)
    with pytest.raises(errors.TikTokServerError):
        hook.revoke_token("act.to-revoke", open_id=OPEN_ID, within=5)
    assert script.paths() == ["/v2/oauth/revoke/"]
    assert sleeps == []


def test_an_unbounded_revoke_follows_the_retry_policy(make_hook: Any) -> None:
    hook, script, _, sleeps = make_hook(*[fail(500, "internal_error")] * 4)
    with pytest.raises(errors.TikTokServerError):
        hook.revoke_token("act.to-revoke", open_id=OPEN_ID)
    assert len(script.requests) == 4
    assert len(sleeps) == 3
