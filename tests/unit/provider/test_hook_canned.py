"""The hook over canned HTTP answers and an in-memory token store: no server, no Postgres.

A ``requests`` transport adapter mounted on the hook's own session plays TikTok from a script of
answers and records every request, so these tests see exactly what the hook would send: retry
decisions, the reactive token refresh, scope checks before sending, the paging guards.
The same paths run against the simulator over real HTTP in ``tests/provider``.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from tiktok_provider import errors
from tiktok_provider.auth import AccountTokens, TokenGrant
from tiktok_provider.hooks.tiktok import TikTokDisplayHook

BASE = "https://tiktok.test"
OPEN_ID = "acct-1"
SECRET = "client-secret-do-not-leak"


@dataclass
class Canned:
    status: int
    body: Any
    headers: dict[str, str] | None = None


def ok(data: dict[str, Any], log_id: str = "log-ok") -> Canned:
    return Canned(200, {"data": data, "error": {"code": "ok", "message": "", "log_id": log_id}})


def fail(status: int, code: str, log_id: str = "log-err", **headers: str) -> Canned:
    return Canned(status, {"data": {}, "error": {"code": code, "message": code, "log_id": log_id}}, headers)


class Script(BaseAdapter):
    """A transport that answers from a queue and records each request."""

    def __init__(self, *answers: Canned) -> None:
        super().__init__()
        self.answers = deque(answers)
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.requests.append(request)
        if not self.answers:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        answer = self.answers.popleft()
        response = requests.Response()
        response.status_code = answer.status
        response._content = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        response.headers.update(answer.headers or {})
        response.url = request.url
        response.request = request
        return response

    def close(self) -> None:
        pass

    def paths(self) -> list[str]:
        return [r.path_url.split("?")[0] for r in self.requests]


class MemoryTokenStore:
    """The two calls the hook makes on a token store, kept in a dict: enough for pure tests."""

    def __init__(self, tokens: AccountTokens) -> None:
        self.tokens = {tokens.open_id: tokens}
        self.refreshes = 0

    def get(self, open_id: str) -> AccountTokens:
        return self.tokens[open_id]

    def refresh_locked(self, open_id: str, refresh: Any, *, min_remaining: timedelta, **_: Any) -> AccountTokens:
        current = self.tokens[open_id]
        grant: TokenGrant = refresh(current)
        self.refreshes += 1
        self.tokens[open_id] = replace(
            current,
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            access_expires_at=grant.obtained_at + timedelta(seconds=grant.expires_in),
        )
        return self.tokens[open_id]


ALL_SCOPES = ("user.info.basic", "user.info.stats", "video.list")


def account(*, scopes: tuple[str, ...] = ALL_SCOPES, expires_in: int = 3600) -> AccountTokens:
    now = datetime.now(UTC)
    return AccountTokens(
        open_id=OPEN_ID,
        access_token="act.current-access-token",
        refresh_token="rft.current-refresh-token",
        access_expires_at=now + timedelta(seconds=expires_in),
        refresh_expires_at=now + timedelta(days=300),
        scopes=frozenset(scopes),
        status="active",
    )


@pytest.fixture
def make_hook(monkeypatch: pytest.MonkeyPatch) -> Any:
    def make(*answers: Canned, tokens: AccountTokens | None = None, host: str = BASE, **extra: Any) -> Any:
        conn = {
            "conn_type": "tiktok",
            "host": host,
            "login": "client-key",
            "password": SECRET,
            "extra": {"max_attempts": 4, "max_backoff_seconds": 30, "rate_limit_per_minute": 100_000, **extra},
        }
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_UNIT", json.dumps(conn))
        sleeps: list[float] = []
        store = MemoryTokenStore(tokens or account())
        hook = TikTokDisplayHook("tiktok_unit", token_store=store, sleep=sleeps.append)
        script = Script(*answers)
        hook.get_conn().mount(host, script)
        return hook, script, store, sleeps

    return make


def user(**fields: Any) -> Canned:
    return ok({"user": {"open_id": OPEN_ID, "display_name": "Ada", "follower_count": 10, **fields}})


def page(ids: list[str], *, cursor: int | None, has_more: bool) -> Canned:
    videos = [{"id": i, "create_time": 1_700_000_000, "title": f"t{i}"} for i in ids]
    return ok({"videos": videos, "cursor": cursor, "has_more": has_more})


# -- the retry policy ------------------------------------------------------------------------------


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


# -- tokens ----------------------------------------------------------------------------------------


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


def test_a_bearer_token_never_goes_over_plain_http_to_a_remote_host(make_hook: Any) -> None:
    hook, script, _, _ = make_hook(host="http://tiktok.test")
    with pytest.raises(errors.TikTokConfigError):
        hook.get_user_info(OPEN_ID, ["display_name"])
    assert script.requests == []


# -- paging ----------------------------------------------------------------------------------------


def test_pages_follow_the_cursor_and_drop_repeats_across_the_boundary(make_hook: Any) -> None:
    hook, script, _, _ = make_hook(
        page(["3", "2"], cursor=2000, has_more=True),
        page(["2", "1"], cursor=1000, has_more=False),
    )
    pages = list(hook.iter_video_pages(OPEN_ID, fields=["title"]))
    assert [[v["id"] for v in p.videos] for p in pages] == [["3", "2"], ["1"]]
    assert json.loads(script.requests[1].body) == {"max_count": 20, "cursor": 2000}


def test_a_cursor_that_does_not_move_ends_the_listing_with_a_clear_error(make_hook: Any) -> None:
    hook, _, _, _ = make_hook(
        page(["3"], cursor=2000, has_more=True),
        page(["2"], cursor=2000, has_more=True),
    )
    with pytest.raises(errors.TikTokMalformedResponse, match="cursor did not advance"):
        list(hook.iter_video_pages(OPEN_ID, fields=["title"]))


def test_has_more_over_endless_empty_pages_is_stopped(make_hook: Any) -> None:
    answers = [page([], cursor=10_000 - n, has_more=True) for n in range(5)]
    hook, script, _, _ = make_hook(*answers)
    with pytest.raises(errors.TikTokMalformedResponse, match="empty pages"):
        list(hook.iter_video_pages(OPEN_ID, fields=["title"], max_empty_pages=3))
    assert len(script.requests) == 4


def test_query_sends_at_most_twenty_ids_a_call(make_hook: Any) -> None:
    ids = [str(n) for n in range(1, 46)]
    answers = [ok({"videos": [{"id": i} for i in ids[s : s + 20]]}) for s in range(0, 45, 20)]
    hook, script, _, _ = make_hook(*answers)
    batches = list(hook.query_videos(OPEN_ID, ids, fields=["title"]))
    assert [len(b) for b, _ in batches] == [20, 20, 5]
    assert [len(json.loads(r.body)["filters"]["video_ids"]) for r in script.requests] == [20, 20, 5]


def test_no_secret_or_token_in_an_error_message(make_hook: Any) -> None:
    hook, _, _, _ = make_hook(*[fail(500, "internal_error")] * 4)
    with pytest.raises(errors.TikTokError) as caught:
        hook.get_user_info(OPEN_ID, ["display_name"])
    text = str(caught.value)
    for secret in (SECRET, "act.current-access-token", "rft.current-refresh-token"):
        assert secret not in text


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
