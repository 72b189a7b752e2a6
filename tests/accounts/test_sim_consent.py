"""The simulator's authorize page and webhook sender, over real HTTP (no Airflow)."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tiktok_sim.testing import pkce_pair

pytestmark = pytest.mark.integration

REDIRECT = "https://airflow.example/tiktok-accounts/callback"
XSS = '<script>alert("x")</script>'


def authorize_params(sim: Any, **overrides: str) -> dict[str, str]:
    params = {
        "client_key": sim.client_key,
        "scope": "user.info.basic,video.list",
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "state": "st-123",
    }
    params.update(overrides)
    return params


def decide(sim: Any, params: dict[str, str], **form: Any) -> requests.Response:
    return requests.post(
        f"{sim.base_url}/v2/auth/authorize/", data={**params, **form}, allow_redirects=False, timeout=10
    )


def query(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def test_the_consent_page_lists_accounts_escaped_and_approving_returns_a_pkce_bound_code(sim: Any) -> None:
    account = sim.admin.create_account(videos=3, display_name=XSS)
    verifier, challenge = pkce_pair()
    params = authorize_params(sim, state='"><img src=x>', code_challenge=challenge, code_challenge_method="S256")
    page = requests.get(f"{sim.base_url}/v2/auth/authorize/", params=params, timeout=10)
    assert page.status_code == 200
    assert XSS not in page.text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page.text
    assert '"><img src=x>' not in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none': no script at all

    back = query(
        decide(
            sim, params, open_id=account["open_id"], decision="approve", granted_scope=["user.info.basic", "video.list"]
        )
    )
    assert back["state"] == '"><img src=x>' and back["scopes"] == "user.info.basic,video.list"
    token_url = f"{sim.base_url}/v2/oauth/token/"
    form = {"client_key": sim.client_key, "client_secret": sim.client_secret, "grant_type": "authorization_code"}
    form |= {"code": back["code"], "redirect_uri": REDIRECT}
    assert requests.post(token_url, data=form, timeout=10).json()["error"] == "invalid_grant"  # no verifier
    answer = requests.post(token_url, data={**form, "code_verifier": verifier}, timeout=10).json()
    assert answer["open_id"] == account["open_id"] and answer["scope"] == "user.info.basic,video.list"


def test_unticked_scopes_are_not_granted(sim: Any) -> None:
    account = sim.admin.create_account(videos=1)
    back = query(
        decide(
            sim, authorize_params(sim), open_id=account["open_id"], decision="approve", granted_scope="user.info.basic"
        )
    )
    assert back["scopes"] == "user.info.basic"
    none = query(decide(sim, authorize_params(sim), open_id=account["open_id"], decision="approve"))
    assert none["error"] == "invalid_scope" and "code" not in none


def test_denying_sends_access_denied_with_the_state(sim: Any) -> None:
    account = sim.admin.create_account(videos=1)
    back = query(decide(sim, authorize_params(sim), open_id=account["open_id"], decision="deny"))
    assert back["error"] == "access_denied" and back["state"] == "st-123" and "code" not in back


@pytest.mark.parametrize(
    "overrides",
    [
        {"client_key": "someone-else"},
        {"redirect_uri": "javascript:alert(1)"},
        {"redirect_uri": "/relative/callback"},
        {"redirect_uri": REDIRECT + "#frag"},
        {"redirect_uri": "https://x.example/" + "a" * 600},
    ],
)
def test_an_untrustworthy_request_ends_on_tiktoks_own_page_never_in_a_redirect(sim: Any, overrides: dict) -> None:
    params = authorize_params(sim, **overrides)
    for response in (
        requests.get(f"{sim.base_url}/v2/auth/authorize/", params=params, allow_redirects=False, timeout=10),
        decide(sim, params, open_id="x", decision="approve"),
    ):
        assert response.status_code == 400 and "location" not in response.headers


@pytest.mark.parametrize(
    ("overrides", "error"),
    [({"scope": "user.info.basic,nope"}, "invalid_scope"), ({"response_type": "token"}, "unsupported_response_type")],
)
def test_a_bad_scope_or_response_type_is_sent_back_as_an_error(sim: Any, overrides: dict, error: str) -> None:
    response = requests.get(
        f"{sim.base_url}/v2/auth/authorize/",
        params=authorize_params(sim, **overrides),
        allow_redirects=False,
        timeout=10,
    )
    assert query(response)["error"] == error


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A plain HTTP server that records what it receives and answers 200."""
    received: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"headers": dict(self.headers), "body": body})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()


def test_the_simulator_signs_webhooks_as_tiktok_does(sim: Any, receiver: tuple[str, list]) -> None:
    url, received = receiver
    sent = requests.post(
        f"{sim.base_url}/_sim/webhooks/send", json={"url": url, "open_id": "abc", "reason": 2}, timeout=10
    ).json()
    assert sent["status"] == 200 and sent["payload"]["content"] == '{"reason": 2}'
    header = received[0]["headers"]["TikTok-Signature"]
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(
        sim.client_secret.encode(), f"{parts['t']}.".encode() + received[0]["body"], hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(parts["s"], expected)

    requests.post(
        f"{sim.base_url}/_sim/webhooks/send",
        json={"url": url, "open_id": "abc", "signature": "missing"},
        timeout=10,
    )
    assert "TikTok-Signature" not in received[1]["headers"]
    stale = requests.post(
        f"{sim.base_url}/_sim/webhooks/send",
        json={"url": url, "open_id": "abc", "timestamp_offset": -600},
        timeout=10,
    ).json()
    stamp = int(dict(i.split("=", 1) for i in received[2]["headers"]["TikTok-Signature"].split(","))["t"])
    assert stamp <= stale["payload"]["create_time"] - 600
