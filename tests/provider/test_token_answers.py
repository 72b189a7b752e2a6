"""Answers the simulator cannot give: a token answer that leaves values out, bodies nested too deep.

A small HTTP server on loopback plays TikTok here, so the hook goes through its real HTTP path; the
token store is the real one in the test warehouse.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import text

from tiktok_provider import errors
from tiktok_provider.responses import parse_envelope, parse_oauth
from tiktok_warehouse.tokens import TokenGrant

pytestmark = pytest.mark.integration

NESTED = b"[" * 200_000
LOG_ID = "20260302093000ABCDEF0123456789ABCDEF"


class FakeTikTok:
    """Answers every POST/GET with the next canned (status, body) of its path; records the paths."""

    def __init__(self) -> None:
        self.answers: dict[str, list[tuple[int, bytes]]] = {}
        self.paths: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                fake.paths.append(path)
                queue = fake.answers.get(path) or [(404, b"{}")]
                status, body = queue.pop(0) if len(queue) > 1 else queue[0]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeTikTok]:
    server = FakeTikTok()
    yield server
    server.close()


def point_at(hook: Any, url: str) -> None:
    hook.config  # noqa: B018 - load it, then aim it at the fake
    object.__setattr__(hook.config, "base_url", url)
    object.__setattr__(hook.config, "max_attempts", 2)


def connected(hook: Any, clean_warehouse: Any, **grant: Any) -> TokenGrant:
    """Store an account whose access token has expired, as if connected long ago."""
    values = {
        "open_id": f"open-{uuid.uuid4().hex[:12]}",
        "access_token": f"act.{uuid.uuid4().hex}{uuid.uuid4().hex}",
        "expires_in": 7200,
        "refresh_token": f"rft.{uuid.uuid4().hex}{uuid.uuid4().hex}",
        "refresh_expires_in": 30 * 86400,
        "scopes": frozenset({"user.info.basic", "video.list"}),
        "obtained_at": datetime.now(UTC),
        **grant,
    }
    granted = TokenGrant(**values)
    hook.token_store.save_grant(granted)
    with clean_warehouse.begin() as conn:
        conn.execute(
            text("UPDATE tiktok.accounts SET access_expires_at = now() - interval '1 minute' WHERE open_id = :o"),
            {"o": granted.open_id},
        )
    return granted


# -- item 10: a refresh answer without scope or refresh_expires_in -------------------------------


@pytest.mark.parametrize("left_out", [("scope",), ("refresh_expires_in",), ("scope", "refresh_expires_in")])
def test_a_refresh_answer_lacking_values_is_stored_not_thrown_away(
    hook, fake, clean_warehouse, caplog, capfd, left_out
) -> None:
    caplog.set_level(logging.DEBUG)
    before = connected(hook, clean_warehouse)
    rotated = {
        "access_token": f"act.{uuid.uuid4().hex}{uuid.uuid4().hex}",
        "expires_in": 86400,
        "refresh_token": f"rft.{uuid.uuid4().hex}{uuid.uuid4().hex}",
        "refresh_expires_in": 31536000,
        "open_id": before.open_id,
        "scope": "user.info.basic,video.list,user.info.stats",
        "token_type": "Bearer",
        "log_id": LOG_ID,
    }
    for key in left_out:
        rotated.pop(key)
    fake.answers["/v2/oauth/token/"] = [(200, json.dumps(rotated).encode())]
    point_at(hook, fake.url)

    assert hook.access_token(before.open_id) == rotated["access_token"]
    stored = hook.token_store.get(before.open_id)
    assert stored.refresh_token == rotated["refresh_token"], "the rotated refresh token was kept"
    assert stored.access_expires_at > datetime.now(UTC) + timedelta(hours=23)
    if "scope" in left_out:
        assert stored.scopes == before.scopes
    else:
        assert stored.scopes == {"user.info.basic", "video.list", "user.info.stats"}
    if "refresh_expires_in" in left_out:
        previous = before.obtained_at + timedelta(seconds=before.refresh_expires_in)
        assert stored.refresh_expires_at == previous, "no longer life than TikTok last stated"
    else:
        assert stored.refresh_expires_at > datetime.now(UTC) + timedelta(days=360)
    out, err = capfd.readouterr()  # the hook logs through Airflow's task logger
    logged = caplog.text + out + err
    warnings = [line for line in logged.splitlines() if "lacks a usable" in line]
    assert any(all(k in w for k in left_out) and LOG_ID in w and before.open_id in w for w in warnings), logged
    for token in (rotated["access_token"], rotated["refresh_token"], before.refresh_token):
        assert token not in logged


def test_an_unusable_refresh_lifetime_is_dropped_not_fatal() -> None:
    body = json.dumps(
        {"access_token": "act.x", "refresh_token": "rft.y", "open_id": "o", "expires_in": 60, "refresh_expires_in": -5}
    ).encode()
    payload = parse_oauth(200, body, endpoint="/v2/oauth/token/")
    assert "refresh_expires_in" not in payload
    assert payload["refresh_token"] == "rft.y"


def test_a_refresh_whose_stored_expiry_passed_still_asks_tiktok(hook, fake, clean_warehouse) -> None:
    """Our expiry may be an estimate: only TikTok's invalid_grant marks the account for reauth."""
    before = connected(hook, clean_warehouse, refresh_expires_in=1, obtained_at=datetime.now(UTC) - timedelta(days=1))
    rotated = {
        "access_token": f"act.{uuid.uuid4().hex}",
        "expires_in": 86400,
        "refresh_token": f"rft.{uuid.uuid4().hex}",
        "refresh_expires_in": 86400,
        "open_id": before.open_id,
        "scope": "user.info.basic",
        "log_id": LOG_ID,
    }
    fake.answers["/v2/oauth/token/"] = [(200, json.dumps(rotated).encode())]
    point_at(hook, fake.url)
    assert hook.access_token(before.open_id) == rotated["access_token"]
    assert fake.paths == ["/v2/oauth/token/"]


# -- item 11: a body nested deeper than the JSON parser can go ----------------------------------


def test_a_deeply_nested_body_is_a_malformed_answer_not_a_recursion_error() -> None:
    with pytest.raises(errors.TikTokError) as envelope:
        parse_envelope(200, NESTED, endpoint="/v2/video/list/", open_id="acct", header_log_id=LOG_ID)
    assert "acct" in str(envelope.value) and LOG_ID in str(envelope.value)
    with pytest.raises(errors.TikTokError):
        parse_oauth(200, NESTED, endpoint="/v2/oauth/token/", open_id="acct")
    with pytest.raises(errors.TikTokServerError):
        parse_envelope(503, NESTED, endpoint="/v2/video/list/", open_id="acct")


@pytest.mark.parametrize("path", ["/v2/user/info/", "/v2/oauth/token/"])
def test_a_deeply_nested_answer_over_http_fails_like_any_bad_answer(hook, fake, clean_warehouse, path) -> None:
    account = connected(hook, clean_warehouse)
    if path == "/v2/user/info/":
        with clean_warehouse.begin() as conn:  # the token is fresh: no refresh before the call
            conn.execute(
                text("UPDATE tiktok.accounts SET access_expires_at = now() + interval '1 day' WHERE open_id = :o"),
                {"o": account.open_id},
            )
    fake.answers[path] = [(200, NESTED)]
    point_at(hook, fake.url)
    with pytest.raises(errors.TikTokError) as failed:
        hook.get_user_info(account.open_id, ["open_id"])
    assert account.open_id in str(failed.value)
    assert path in str(failed.value)
    assert fake.paths == [path] * hook.config.max_attempts, "retried like a body cut off in transit"


def test_a_deeply_nested_revoke_answer_does_not_escape(hook, fake) -> None:
    fake.answers["/v2/oauth/revoke/"] = [(500, NESTED)]
    point_at(hook, fake.url)
    with pytest.raises(errors.TikTokServerError):
        hook.revoke_token("act.whatever", open_id="acct")
