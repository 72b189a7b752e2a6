"""The accounts UI over HTTP, as a browser and as an attacker meet it, against a real api-server and simulator.

Each test checks what changed (and what did not) in the warehouse and at the simulated TikTok.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import text

from tests.accounts.conftest import AccountsStack
from tiktok_warehouse.oauth_states import digest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

XSS = '<script>alert("pwned")</script>'


def token_calls(stack: AccountsStack) -> int:
    return stack.sim.stats()["endpoints"].get("oauth_token", {}).get("requests", 0)


def revoke_calls(stack: AccountsStack) -> int:
    return stack.sim.stats()["endpoints"].get("oauth_revoke", {}).get("requests", 0)


def webhook(stack: AccountsStack, open_id: str, **options: Any) -> dict[str, Any]:
    """Have the simulator deliver TikTok's authorization.removed to the stack."""
    answer = requests.post(
        f"{stack.sim_url}/_sim/webhooks/send",
        json={"url": f"{stack.app}/webhook", "open_id": open_id, **options},
        timeout=60,
    )
    answer.raise_for_status()
    return answer.json()


# -- authentication and authorization ------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/"),
    ("GET", "/api/accounts"),
    ("GET", "/icon.svg"),
    ("POST", "/connect"),
    ("GET", "/callback?code=abc&state=def"),
    ("POST", "/accounts/some-account/disconnect"),
    ("POST", "/accounts/some-account/purge"),
    ("POST", "/webhook"),
]


def test_anonymous_callers_get_401_everywhere_and_change_nothing(stack: AccountsStack) -> None:
    before = stack.accounts()
    calls = (token_calls(stack), revoke_calls(stack))
    for method, path in ENDPOINTS:
        for accept in ("application/json", "text/html"):
            answer = requests.request(
                method, f"{stack.app}{path}", headers={"Accept": accept}, data={"x": "1"}, allow_redirects=False
            )
            assert answer.status_code == 401, (method, path, answer.status_code, answer.text[:200])
    page = requests.get(f"{stack.app}/", headers={"Accept": "text/html"})
    assert "Log in to Airflow" in page.text and "/auth/login" in page.text
    assert stack.accounts() == before
    assert (token_calls(stack), revoke_calls(stack)) == calls


def test_a_forged_session_cookie_is_refused(stack: AccountsStack) -> None:
    session = requests.Session()
    session.cookies.set("_token", "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJhZG1pbiJ9.forged", domain="127.0.0.1")
    for method, path in ENDPOINTS[:-1]:
        assert session.request(method, f"{stack.app}{path}", allow_redirects=False).status_code in (401, 403)


@pytest.mark.parametrize("user", ["viewer", "user"])
def test_read_only_users_see_the_page_but_cannot_connect_disconnect_or_purge(stack: AccountsStack, user: str) -> None:
    open_id = stack.connect()
    disconnected = stack.connect()
    webhook(stack, disconnected)  # one disconnected account, to try purging
    before = stack.accounts()
    calls = (token_calls(stack), revoke_calls(stack))

    session = stack.browser(user)
    html, csrf = stack.page(session)
    assert open_id in html
    assert ">Disconnect<" not in html and ">Purge<" not in html and ">Connect account<" not in html
    for path, form in (
        ("/connect", {"scope": "video.list"}),
        (f"/accounts/{open_id}/disconnect", {}),
        (f"/accounts/{disconnected}/purge", {"confirm": disconnected}),
    ):
        answer = session.post(f"{stack.app}{path}", data={"csrf_token": csrf, **form}, allow_redirects=False)
        assert answer.status_code == 403, (path, answer.text[:300])
        assert "your Airflow role may not" in answer.text  # refused for the role, before any CSRF check
    assert session.get(f"{stack.callback}?code=x&state=y", allow_redirects=False).status_code == 403
    assert stack.accounts() == before
    assert (token_calls(stack), revoke_calls(stack)) == calls


# -- CSRF ------------------------------------------------------------------------------------------


def test_writes_without_a_valid_csrf_token_or_from_another_origin_are_refused(stack: AccountsStack) -> None:
    open_id = stack.connect()
    admin = stack.browser("admin")
    _, csrf = stack.page(admin)
    other = stack.browser("admin")  # the same user in another browser: another CSRF cookie
    _, other_csrf = stack.page(other)
    before, revokes = stack.accounts(), revoke_calls(stack)
    attempts = [
        ({}, {}),
        ({"csrf_token": "0" * 64}, {}),
        ({"csrf_token": other_csrf}, {}),  # a token minted for another browser
        ({"csrf_token": csrf}, {"Origin": "https://evil.example"}),
        ({"csrf_token": csrf}, {"Origin": "null"}),
    ]
    for form, headers in attempts:
        answer = admin.post(
            f"{stack.app}/accounts/{open_id}/disconnect", data=form, headers=headers, allow_redirects=False
        )
        assert answer.status_code == 403, (form, headers, answer.text[:200])
    naked = requests.post(  # a cross-site form: the browser would send the JWT cookie, but no CSRF cookie
        f"{stack.app}/accounts/{open_id}/disconnect",
        data={"csrf_token": csrf},
        cookies={"_token": stack.token("admin")},
        allow_redirects=False,
    )
    assert naked.status_code == 403
    assert stack.accounts() == before and revoke_calls(stack) == revokes
    # The cookie is HttpOnly, SameSite=Strict and only sent to the plugin's path.
    cookie = next(c for c in admin.cookies if c.name == "tiktok_accounts_csrf")
    assert cookie.path == "/tiktok-accounts" and cookie.has_nonstandard_attr("HttpOnly")
    # Only the response's own nonced script runs; only Airflow itself may frame the page.
    page = admin.get(f"{stack.app}/")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'self'" in policy and "unsafe" not in policy
    assert re.search(r"script-src 'nonce-[\w-]+';", policy)
    assert page.headers["x-frame-options"] == "SAMEORIGIN" and page.headers["referrer-policy"] == "same-origin"


# -- the connect flow ----------------------------------------------------------------------------


def test_connect_end_to_end_stores_encrypted_tokens_and_starts_the_first_runs_for_that_account(
    stack: AccountsStack,
) -> None:
    session = stack.browser()
    account = stack.sim.create_account(videos=5, display_name=XSS)
    earlier_runs = {  # a simulator restarted with the same seed hands out the same open_ids
        run["dag_run_id"]
        for dag_id in ("tiktok_profile_snapshot", "tiktok_video_backfill")
        for run in stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]
    }
    authorize = stack.start_connect(session, scopes=("user.info.profile", "user.info.stats", "video.list"))
    assert authorize["client_key"] == "sim-client-key" and authorize["response_type"] == "code"
    assert authorize["redirect_uri"] == stack.callback  # from [tiktok_accounts] public_base_url
    assert authorize["scope"] == "user.info.basic,user.info.profile,user.info.stats,video.list"
    assert authorize["code_challenge_method"] == "S256" and len(authorize["code_challenge"]) == 43
    assert len(authorize["state"]) >= 43
    binding = next(c for c in session.cookies if c.name == "tiktok_accounts_oauth")
    assert binding.path == "/tiktok-accounts" and binding.has_nonstandard_attr("HttpOnly")

    back = stack.consent(authorize, account["open_id"])
    assert back.startswith(stack.callback + "?code=")
    answer = session.get(back, allow_redirects=False)
    assert answer.status_code == 303, answer.text[:800]
    location = answer.headers["location"]  # back into the Airflow UI, the page in its plugin frame
    assert location.startswith("/plugin/tiktok-accounts/tiktok-accounts/?") and "done=connected" in location
    open_id = account["open_id"]
    assert stack.accounts()[open_id] == ("active", None)
    with stack.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM tiktok.accounts WHERE open_id = :o"), {"o": open_id}).one()._mapping
        states = conn.execute(text("SELECT state_hash, used_at FROM tiktok.oauth_states")).all()
    assert row["display_name"] == XSS and row["authorized_at"] is not None
    assert bytes(row["access_token_enc"]).startswith(b"gAAAAA") and b"act." not in bytes(row["access_token_enc"])
    assert authorize["state"] not in {s.state_hash for s in states}  # only its hash is stored

    runs = {}
    for dag_id in ("tiktok_profile_snapshot", "tiktok_video_backfill"):
        found = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?run_id_pattern=connect__{open_id}")["dag_runs"]
        new = [run for run in found if run["dag_run_id"] not in earlier_runs]
        assert len(new) == 1, found
        runs[dag_id] = new[0]
        assert new[0]["conf"] == {"accounts": [open_id]} and new[0]["triggering_user_name"] == "admin"

    html = session.get(f"{stack.url}{location.removeprefix('/plugin/tiktok-accounts')}").text
    assert XSS not in html and "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html
    assert "Connected &lt;script&gt;" in html  # the notice names it, escaped too
    assert "act." not in html and "rft." not in html  # never a token
    assert f"/dags/tiktok_profile_snapshot/runs/{runs['tiktok_profile_snapshot']['dag_run_id']}" in html


def test_a_replayed_callback_is_refused_and_exchanges_nothing(stack: AccountsStack) -> None:
    session = stack.browser()
    account = stack.sim.create_account(videos=1)
    back = stack.consent(stack.start_connect(session), account["open_id"])
    assert session.get(back, allow_redirects=False).status_code == 303
    calls = token_calls(stack)
    replay = session.get(back, allow_redirects=False)
    assert replay.status_code == 400
    assert "already used" in replay.text and "Nothing was stored" in replay.text
    assert token_calls(stack) == calls


def test_a_tampered_state_is_refused_and_the_code_is_not_spent(stack: AccountsStack) -> None:
    session = stack.browser()
    account = stack.sim.create_account(videos=1)
    back = stack.consent(stack.start_connect(session), account["open_id"])
    query = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
    calls, before = token_calls(stack), stack.accounts()
    tampered = session.get(stack.callback, params={**query, "state": query["state"][:-2] + "xx"}, allow_redirects=False)
    assert tampered.status_code == 400 and "matches no connect attempt" in tampered.text
    missing = session.get(stack.callback, params={"code": query["code"]}, allow_redirects=False)
    assert missing.status_code == 400 and "carries no state" in missing.text
    assert token_calls(stack) == calls and stack.accounts() == before
    # The rightful callback still works: nothing was used up.
    assert session.get(back, allow_redirects=False).status_code == 303


def test_a_state_started_in_another_browser_is_refused(stack: AccountsStack) -> None:
    account = stack.sim.create_account(videos=1)
    back = stack.consent(stack.start_connect(stack.browser()), account["open_id"])
    calls, before = token_calls(stack), stack.accounts()
    victim = stack.browser()  # logged in too, but it did not start this attempt (login CSRF / link injection)
    answer = victim.get(back, allow_redirects=False)
    assert answer.status_code == 400 and "another browser" in answer.text
    assert token_calls(stack) == calls and stack.accounts() == before


def test_an_expired_state_is_refused(stack: AccountsStack) -> None:
    session = stack.browser()
    account = stack.sim.create_account(videos=1)
    back = stack.consent(stack.start_connect(session), account["open_id"])
    with stack.engine.begin() as conn:  # 16 minutes on the consent page
        conn.execute(
            text("UPDATE tiktok.oauth_states SET expires_at = :t WHERE used_at IS NULL"),
            {"t": datetime.now(UTC) - timedelta(minutes=1)},
        )
    calls, before = token_calls(stack), stack.accounts()
    answer = session.get(back, allow_redirects=False)
    assert answer.status_code == 400 and "expired" in answer.text
    assert token_calls(stack) == calls and stack.accounts() == before


def test_denied_consent_ends_on_a_clear_page_and_stores_nothing(stack: AccountsStack) -> None:
    session = stack.browser()
    account = stack.sim.create_account(videos=1)
    authorize = stack.start_connect(session)
    back = stack.consent(authorize, account["open_id"], decision="deny")
    assert "error=access_denied" in back
    calls, before = token_calls(stack), stack.accounts()
    answer = session.get(back, allow_redirects=False)
    assert answer.status_code == 400
    assert "Consent denied" in answer.text and "Nothing was stored" in answer.text
    assert token_calls(stack) == calls and stack.accounts() == before
    with stack.engine.connect() as conn:  # the attempt is used up: the same state cannot be reused
        used = conn.execute(
            text("SELECT used_at FROM tiktok.oauth_states WHERE state_hash = :h"), {"h": digest(authorize["state"])}
        ).scalar()
    assert used is not None


def test_a_code_issued_for_another_redirect_uri_is_refused_by_tiktok_and_nothing_is_stored(
    stack: AccountsStack,
) -> None:
    session = stack.browser()
    account = stack.sim.create_account(videos=1)
    authorize = stack.start_connect(session)
    # A code obtained through another (e.g. an attacker's) redirect URI, pasted into our callback.
    code = stack.sim.mint_code(account["open_id"], ["user.info.basic"], "https://evil.example/callback")
    before = stack.accounts()
    answer = session.get(stack.callback, params={"code": code, "state": authorize["state"]}, allow_redirects=False)
    assert answer.status_code == 400, answer.text[:500]
    assert "invalid_grant" in answer.text and "log_id=" in answer.text and stack.callback in answer.text
    assert stack.accounts() == before


def test_an_expired_code_is_refused_and_nothing_is_stored(stack: AccountsStack) -> None:
    session = stack.browser()
    account = stack.sim.create_account(videos=1)
    back = stack.consent(stack.start_connect(session), account["open_id"])
    stack.sim.advance_clock(601)  # codes live 10 minutes
    try:
        before = stack.accounts()
        answer = session.get(back, allow_redirects=False)
        assert answer.status_code == 400 and "expired" in answer.text.lower() and "invalid_grant" in answer.text
        assert stack.accounts() == before
    finally:
        stack.sim.advance_clock(-601)


def test_reconnecting_an_account_that_needs_it(stack: AccountsStack) -> None:
    session = stack.browser()
    open_id = stack.connect(session)
    with stack.engine.begin() as conn:
        conn.execute(
            text("UPDATE tiktok.accounts SET status = 'reauth_required', status_reason = 'test' WHERE open_id = :o"),
            {"o": open_id},
        )
    html, _ = stack.page(session)
    assert ">Reconnect<" in html
    authorize = stack.start_connect(session, open_id=open_id)
    answer = session.get(stack.consent(authorize, open_id), allow_redirects=False)
    assert answer.status_code == 303 and "warn=" in answer.headers["location"]
    assert "other" not in parse_qs(urlsplit(answer.headers["location"]).query).get("warn", [""])[0]
    assert stack.accounts()[open_id] == ("active", None)


# -- disconnect, purge -----------------------------------------------------------------------------


def test_disconnect_revokes_at_tiktok_then_purge_needs_confirmation(stack: AccountsStack) -> None:
    session = stack.browser()
    open_id = stack.connect(session)
    _, csrf = stack.page(session)
    answer = session.post(
        f"{stack.app}/accounts/{open_id}/disconnect", data={"csrf_token": csrf}, allow_redirects=False
    )
    assert answer.status_code == 303 and "done=disconnected" in answer.headers["location"]
    status, reason = stack.accounts()[open_id]
    assert status == "disconnected" and "disconnected by admin" in reason
    live = [t for t in stack.sim.tokens(open_id) if t["status"] == "active"]
    assert live == [], live  # TikTok no longer honours any of its tokens

    again = session.post(f"{stack.app}/accounts/{open_id}/disconnect", data={"csrf_token": csrf}, allow_redirects=False)
    assert "done=already" in again.headers["location"]
    unconfirmed = session.post(
        f"{stack.app}/accounts/{open_id}/purge", data={"csrf_token": csrf, "confirm": "yes"}, allow_redirects=False
    )
    assert unconfirmed.status_code == 400 and open_id in stack.accounts()
    purged = session.post(
        f"{stack.app}/accounts/{open_id}/purge", data={"csrf_token": csrf, "confirm": open_id}, allow_redirects=False
    )
    assert purged.status_code == 303 and "done=purged" in purged.headers["location"]
    assert open_id not in stack.accounts()


def test_purging_a_connected_account_is_refused(stack: AccountsStack) -> None:
    session = stack.browser()
    open_id = stack.connect(session)
    _, csrf = stack.page(session)
    answer = session.post(
        f"{stack.app}/accounts/{open_id}/purge", data={"csrf_token": csrf, "confirm": open_id}, allow_redirects=False
    )
    assert answer.status_code == 409 and "Disconnect it first" in answer.text
    assert stack.accounts()[open_id][0] == "active"


# -- the webhook -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"signature": "missing"}, "missing"),
        ({"signature": "bad"}, "does not match"),
        ({"timestamp_offset": -301}, "more than 300 s"),
        ({"timestamp_offset": 400}, "more than 300 s"),
    ],
)
def test_an_unsigned_forged_or_stale_webhook_gets_401_and_changes_nothing(
    stack: AccountsStack, options: dict[str, Any], why: str
) -> None:
    open_id = stack.connect()
    before = stack.accounts()
    sent = webhook(stack, open_id, **options)
    assert sent["status"] == 401 and why in sent["body"]
    assert stack.accounts() == before


def test_an_oversized_webhook_is_refused_before_anything_else(stack: AccountsStack) -> None:
    answer = requests.post(f"{stack.app}/webhook", data=b"{" + b" " * 70_000 + b"}", timeout=30)
    assert answer.status_code == 413


def test_the_deauthorization_webhook_disconnects_idempotently(stack: AccountsStack) -> None:
    open_id = stack.connect()
    first = webhook(stack, open_id, reason=1)
    assert first["status"] == 200, first
    assert '"result":"disconnected"' in first["body"]
    status, reason = stack.accounts()[open_id]
    assert status == "disconnected" and "the user disconnected the app in TikTok" in reason
    with stack.engine.connect() as conn:
        at = conn.execute(
            text("SELECT disconnected_at FROM tiktok.accounts WHERE open_id = :o"), {"o": open_id}
        ).scalar()
    again = webhook(stack, open_id, reason=1)  # at-least-once delivery
    assert again["status"] == 200 and '"result":"already"' in again["body"]
    with stack.engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT disconnected_at FROM tiktok.accounts WHERE open_id = :o"), {"o": open_id}
            ).scalar()
            == at
        )
    unknown = webhook(stack, "nobody-we-know")
    assert unknown["status"] == 200 and '"result":"unknown"' in unknown["body"]


def test_a_redelivered_webhook_older_than_the_current_authorization_changes_nothing(stack: AccountsStack) -> None:
    open_id = stack.connect()
    old = webhook(stack, open_id, create_time=int(time.time()) - 3600)  # removed an hour ago, reconnected since
    assert old["status"] == 200 and '"result":"stale"' in old["body"]
    assert stack.accounts()[open_id] == ("active", None)


# -- escaping and redirects ------------------------------------------------------------------------


def test_nothing_from_the_request_is_reflected_unescaped(stack: AccountsStack) -> None:
    session = stack.browser()
    for url in (
        f"{stack.app}/?done=connected&account={XSS}&warn=other",
        f"{stack.app}/?days=<b>&done=<i>",
    ):
        html = session.get(url).text
        assert XSS not in html and "<b>" not in html and "<i>" not in html
    answer = session.get(
        stack.callback, params={"error": XSS, "error_description": XSS, "state": "x"}, allow_redirects=False
    )
    # An unknown error code is not shown at all (fixed texts only; see test_audit_attack12).
    assert answer.status_code == 400 and XSS not in answer.text and "error code we do not know" in answer.text
    _, csrf = stack.page(session)
    not_found = session.post(f"{stack.app}/accounts/{XSS}/purge", data={"csrf_token": csrf}, allow_redirects=False)
    assert not_found.status_code == 404 and XSS not in not_found.text and "pwned" not in not_found.text


def test_connect_never_redirects_anywhere_but_tiktoks_configured_authorize_page(stack: AccountsStack) -> None:
    session = stack.browser()
    _, csrf = stack.page(session)
    for extra in ({"next": "https://evil.example/"}, {"redirect_uri": "https://evil.example/cb"}):
        answer = session.post(
            f"{stack.app}/connect", data={"csrf_token": csrf, "scope": "video.list", **extra}, allow_redirects=False
        )
        location = answer.headers["location"]
        assert location.startswith(f"{stack.sim_url}/v2/auth/authorize/?") and "evil.example" not in location
    answer = session.get(f"{stack.callback}?next=https://evil.example/", allow_redirects=False)
    assert "evil.example" not in answer.headers.get("location", "")
