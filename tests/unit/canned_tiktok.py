"""Canned TikTok answers for the unit tier: a scripted transport, an in-memory token store, the hook over both.

A ``requests`` transport adapter mounted on the hook's own session plays TikTok from a script of
answers and records every request, so a test sees exactly what would be sent; the same paths run
against the simulator over real HTTP in ``tests/provider``.
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


def user(**fields: Any) -> Canned:
    return ok({"user": {"open_id": OPEN_ID, "display_name": "Ada", "follower_count": 10, **fields}})


def page(ids: list[str], *, cursor: int | None, has_more: bool) -> Canned:
    videos = [{"id": i, "create_time": 1_700_000_000, "title": f"t{i}"} for i in ids]
    return ok({"videos": videos, "cursor": cursor, "has_more": has_more})


def hook_factory(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Return ``make(*answers, tokens=, host=, **extra) -> (hook, script, store, sleeps)``."""

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
