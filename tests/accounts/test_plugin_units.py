"""The accounts UI's pure parts (no server): signatures, PKCE, escaping, the chart; and the webhook's retention."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tiktok_accounts.oauth import authorize_redirect, chosen_scopes, code_challenge
from tiktok_accounts.pages import (
    AccountView,
    PageContext,
    TaskLink,
    VideoTile,
    accounts_page,
    early_curve,
    follower_chart,
    message_page,
)
from tiktok_accounts.service import Backend, handle_webhook
from tiktok_accounts.settings import TIKTOK_AUTHORIZE_URL, AccountsSettings
from tiktok_accounts.webhook import WebhookRejected, parse_event, verify_signature
from tiktok_provider.connection import TikTokConnectionConfig
from tiktok_warehouse.accounts_admin import AccountHealth, FollowerPoint
from tiktok_warehouse.tokens import TokenGrant, TokenStore

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
SECRET = "client-secret-for-tests"
XSS = '"><script>alert(1)</script>'


def signed(body: bytes, *, at: int, secret: str = SECRET) -> str:
    return f"t={at},s={hmac.new(secret.encode(), f'{at}.'.encode() + body, hashlib.sha256).hexdigest()}"


# -- webhook signatures ----------------------------------------------------------------------------


def test_a_valid_signature_within_five_minutes_passes() -> None:
    body = b'{"event":"authorization.removed"}'
    at = int(NOW.timestamp())
    assert verify_signature(signed(body, at=at), body, SECRET, now=at + 299) == at
    assert verify_signature(f"s=00,{signed(body, at=at)}", body, SECRET, now=at) == at  # several s= values


@pytest.mark.parametrize(
    ("header", "body", "now_offset", "reason"),
    [
        (None, b"{}", 0, "missing"),
        ("", b"{}", 0, "missing"),
        ("s=abc", b"{}", 0, "no valid timestamp"),
        ("t=abc,s=00", b"{}", 0, "no valid timestamp"),
        ("t=1772443800,s=" + "0" * 64, b"{}", 0, "does not match"),
        (signed(b"{}", at=1772443800, secret="other"), b"{}", 0, "does not match"),
        (signed(b"{}", at=1772443800), b'{"x":1}', 0, "does not match"),  # body changed
        (signed(b"{}", at=1772443800), b"{}", 301, "more than 300 s"),  # replayed later
        (signed(b"{}", at=1772443800), b"{}", -301, "more than 300 s"),  # from the future
    ],
)
def test_bad_missing_or_stale_signatures_are_401(header: str | None, body: bytes, now_offset: int, reason: str) -> None:
    with pytest.raises(WebhookRejected) as rejected:
        verify_signature(header, body, SECRET, now=1772443800 + now_offset)
    assert rejected.value.status == 401 and reason in rejected.value.reason


def test_no_secret_means_nothing_verifies() -> None:
    with pytest.raises(WebhookRejected) as rejected:
        verify_signature(signed(b"{}", at=1, secret=""), b"{}", "", now=1)
    assert rejected.value.status == 401


def test_events_are_read_defensively() -> None:
    event = parse_event(
        json.dumps(
            {
                "client_key": "ck",
                "event": "authorization.removed",
                "create_time": 1615338610,
                "user_openid": "abc",
                "content": '{"reason": 2}',
            }
        ).encode()
    )
    assert (event.open_id, event.reason, event.create_time.year) == ("abc", 2, 2021)
    odd = parse_event(b'{"event": "authorization.removed", "content": "not json", "create_time": "x"}')
    assert (odd.open_id, odd.reason, odd.create_time) == (None, None, None)
    for body in (b"not json", b"[]", b'{"no": "event"}'):
        with pytest.raises(WebhookRejected) as rejected:
            parse_event(body)
        assert rejected.value.status == 400


# -- OAuth helpers ---------------------------------------------------------------------------------


def test_pkce_challenge_is_rfc_7636_s256_or_hex() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636, appendix B
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert code_challenge(verifier, "hex") == hashlib.sha256(verifier.encode()).hexdigest()


def test_scopes_always_include_basic_and_reject_unknown_ones() -> None:
    assert chosen_scopes(["video.list"]) == ("user.info.basic", "video.list")
    with pytest.raises(ValueError, match="unknown scope"):
        chosen_scopes(["video.list", "video.upload"])


def test_authorize_url_and_its_default() -> None:
    url = authorize_redirect(
        TIKTOK_AUTHORIZE_URL,
        client_key="ck",
        scopes=["a", "b"],
        redirect_uri="https://x/cb?y",
        state="s",
        challenge="c",
    )
    assert url.startswith("https://www.tiktok.com/v2/auth/authorize/?client_key=ck&scope=a%2Cb&response_type=code")
    assert "redirect_uri=https%3A%2F%2Fx%2Fcb%3Fy" in url and url.endswith("code_challenge_method=S256")
    settings = AccountsSettings(None, None, (30, 7, 1), None, "base64url")
    assert settings.authorize_page("https://open.tiktokapis.com") == TIKTOK_AUTHORIZE_URL
    assert settings.authorize_page("http://127.0.0.1:8765") == "http://127.0.0.1:8765/v2/auth/authorize/"
    assert replace(settings, authorize_url="https://a/b").authorize_page("https://open.tiktokapis.com") == "https://a/b"


# -- pages ------------------------------------------------------------------------------------------


def health(**overrides: object) -> AccountHealth:
    values: dict[str, object] = {
        "open_id": "abc",
        "display_name": XSS,
        "username": XSS,
        "avatar_url": "javascript:alert(1)",
        "status": "reauth_required",
        "status_reason": XSS,
        "scopes": frozenset({"video.list", XSS}),
        "connected_at": NOW,
        "authorized_at": None,
        "disconnected_at": None,
        "access_expires_at": NOW,
        "refresh_expires_at": NOW + timedelta(days=3),
        "last_snapshot_at": None,
        "followers": 10,
        "last_video_sync_at": None,
        "videos_stored": 1,
        "covers_stale": 0,
    }
    values.update(overrides)
    return AccountHealth(**values)  # type: ignore[arg-type]


def context(**overrides: object) -> PageContext:
    values: dict[str, object] = {
        "root": "/tiktok-accounts",
        "ui": "",
        "user_name": XSS,
        "nonce": "n0nce",
        "now": NOW,
        "csrf": "t" * 64,
        "can_manage": True,
        "can_connect": True,
    }
    values.update(overrides)
    return PageContext(**values)  # type: ignore[arg-type]


def test_every_creator_controlled_string_is_escaped() -> None:
    view = AccountView(
        health=health(),
        effective_status="reauth_required",
        consent_days_left=3,
        consent_warning=7,
        chart="",
        growth=None,
        links=[TaskLink(XSS, XSS, "/dags/x")],
        videos=[VideoTile(XSS, XSS, "a" * 64, {"1h": 5}), VideoTile("v2", "t", f"../{XSS}", {})],
    )
    page = accounts_page(
        context(), [view], days=30, redirect_uri=XSS, authorize_host=XSS, notice=("ok", f"Connected {XSS}")
    )
    assert f"/covers/{'a' * 64}" in page and "/covers/../" not in page  # only a content hash makes a URL
    assert XSS not in page and "<script>alert" not in page
    assert page.count("<script") == 1 and 'nonce="n0nce"' in page  # only our own, nonced script
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "javascript:" not in page  # the avatar URL is not http(s): no <img>
    assert ">Reconnect<" in page and ">Disconnect<" in page and ">Purge<" not in page
    assert "act." not in page and "rft." not in page
    error = message_page(context(), XSS, [XSS])
    assert error.count("<script") == 1 and "&lt;script&gt;" in error


def test_read_only_users_get_no_forms() -> None:
    view = AccountView(health(status="disconnected"), "disconnected", 3, None, "", None)
    page = accounts_page(
        context(can_manage=False, can_connect=False), [view], days=30, redirect_uri="", authorize_host=""
    )
    assert "<form" not in page


def test_a_passed_estimated_consent_expiry_is_shown_as_a_guess_not_as_ran_out() -> None:
    guessed = health(status="active", refresh_expires_at=NOW - timedelta(days=1), refresh_expiry_estimated=True)
    page = accounts_page(
        context(), [AccountView(guessed, "active", 0, 1, "", None)], days=30, redirect_uri="", authorize_host=""
    )
    assert "estimated: TikTok did not state it" in page and "the next refresh asks TikTok" in page
    assert "ran out: reconnect" not in page
    stated = health(status="active", refresh_expires_at=NOW - timedelta(days=1))
    page = accounts_page(
        context(), [AccountView(stated, "consent_expired", 0, 1, "", None)], days=30, redirect_uri="", authorize_host=""
    )
    assert "ran out: reconnect the account" in page and "estimated" not in page


def test_the_chart_is_drawn_from_numbers_only() -> None:
    points = [FollowerPoint(date(2026, 2, 1), 100), FollowerPoint(date(2026, 3, 1), 250)]
    svg = follower_chart(points, days=30, now=NOW)
    assert svg.startswith("<svg") and "<polyline points=" in svg and "250" in svg
    assert "Not enough" in follower_chart(points[:1], days=30, now=NOW)


# -- the webhook's retention (service level, real Postgres) -----------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(("retention", "purged"), [(None, False), (0, True), (30, False)])
def test_the_webhook_applies_the_retention(clean_warehouse: Engine, retention: int | None, purged: bool) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    TokenStore(clean_warehouse, key).save_grant(
        TokenGrant("gone", "act.gone-access-token", 60, "rft.gone-refresh-token", 600, frozenset(), NOW)
    )
    config = TikTokConnectionConfig(
        base_url="http://sim", client_key="ck", client_secret=SECRET, token_encryption_key=key
    )
    backend = Backend(config=config, engine=clean_warehouse)
    settings = AccountsSettings(None, None, (30, 7, 1), retention, "base64url")
    now = datetime.now(UTC)
    body = json.dumps(
        {"client_key": "ck", "event": "authorization.removed", "user_openid": "gone", "content": '{"reason": 4}'}
    ).encode()
    result = handle_webhook(backend, settings, signature=signed(body, at=int(now.timestamp())), body=body, now=now)
    assert result["result"] == "disconnected" and result["purged"] is purged
    with clean_warehouse.connect() as conn:
        row = conn.execute(text("SELECT status, status_reason FROM tiktok.accounts WHERE open_id = 'gone'")).first()
    assert (row is None) is purged
    if row is not None:
        assert row.status == "disconnected" and "banned" in row.status_reason
    other_app = json.dumps({"client_key": "someone-else", "event": "authorization.removed", "user_openid": "x"})
    ignored = handle_webhook(
        backend,
        settings,
        signature=signed(other_app.encode(), at=int(now.timestamp())),
        body=other_app.encode(),
        now=now,
    )
    assert ignored["result"] == "ignored"


def test_the_early_views_curve_is_drawn_from_numbers_only() -> None:
    svg = early_curve({"1h": 10, "6h": 80, "24h": 300})
    assert svg.startswith("<svg") and svg.count("<circle") == 3 and "<polyline points=" in svg
    assert "no early views" in early_curve({})


def test_the_csrf_key_needs_the_api_servers_jwt_secret_not_only_what_workers_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Celery workers hold [api] secret_key (log serving) but not [api_auth] jwt_secret: both make the key."""
    from tiktok_accounts import security

    def key(jwt: str, api: str) -> bytes:
        monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", jwt)
        monkeypatch.setenv("AIRFLOW__API__SECRET_KEY", api)
        security._key.cache_clear()
        try:
            return security._key()
        finally:
            security._key.cache_clear()

    server = key("jwt-of-the-api-server", "shared-with-workers")
    assert server == key("jwt-of-the-api-server", "shared-with-workers")  # stable across processes
    assert server != key("", "shared-with-workers"), "what a worker holds alone must not make the key"
    assert server != key("another-jwt", "shared-with-workers")
