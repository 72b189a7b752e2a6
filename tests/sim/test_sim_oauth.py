"""OAuth: code exchange, single-use codes, PKCE, rotation, client checks, expiry and revocation."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tiktok_sim.testing import (
    LOG_ID_PATTERN,
    SimulatorConnection,
    SimulatorProcess,
    pkce_pair,
    running_simulator,
    token_fingerprint,
)

Check = Callable[[requests.Response, str, int], dict[str, Any]]
REDIRECT = "https://example.com/cb"
SUCCESS_FIELDS = {
    "access_token",
    "expires_in",
    "refresh_token",
    "refresh_expires_in",
    "open_id",
    "scope",
    "token_type",
    "log_id",
}


def assert_oauth_error(answer: dict[str, Any], error: str) -> None:
    assert answer.get("error") == error, answer
    assert isinstance(answer["error_description"], str) and answer["error_description"]
    assert LOG_ID_PATTERN.match(answer["log_id"])
    assert "access_token" not in answer


@pytest.fixture
def open_id(sim: SimulatorConnection) -> str:
    return sim.admin.create_account(videos=3)["open_id"]


def test_exchange_answers_the_flat_token_shape(sim: SimulatorConnection, open_id: str) -> None:
    code = sim.admin.mint_code(open_id, ["video.list", "user.info.basic"], REDIRECT)
    response = sim.session.post(
        sim.token_url,
        data={
            "client_key": sim.client_key,
            "client_secret": sim.client_secret,
            "code": code,
            "grant_type": "authorization_code",
            "redirect_uri": REDIRECT,
        },
        timeout=10,
    )
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == SUCCESS_FIELDS
    assert "data" not in answer
    assert re.fullmatch(r"act\.[A-Za-z0-9]{40,}", answer["access_token"])
    assert re.fullmatch(r"rft\.[A-Za-z0-9]{40,}", answer["refresh_token"])
    assert answer["open_id"] == open_id
    assert answer["scope"] == "user.info.basic,video.list"
    assert answer["token_type"] == "Bearer"
    assert answer["expires_in"] == 7200
    assert answer["refresh_expires_in"] == 15552000
    assert LOG_ID_PATTERN.match(answer["log_id"])
    assert response.headers["x-tt-logid"] == answer["log_id"]


def test_a_code_works_once(sim: SimulatorConnection, open_id: str) -> None:
    code = sim.admin.mint_code(open_id, ["user.info.basic"], REDIRECT)
    assert "access_token" in sim.exchange_code(code, REDIRECT)
    response = sim.session.post(
        sim.token_url,
        data={
            "client_key": sim.client_key,
            "client_secret": sim.client_secret,
            "code": code,
            "grant_type": "authorization_code",
            "redirect_uri": REDIRECT,
        },
        timeout=10,
    )
    assert response.status_code == 200  # the body decides
    assert_oauth_error(response.json(), "invalid_grant")


def test_an_unknown_code_is_invalid_grant(sim: SimulatorConnection) -> None:
    assert_oauth_error(sim.exchange_code("nosuchcode", REDIRECT), "invalid_grant")


def test_redirect_uri_must_match_and_a_failed_exchange_keeps_the_code(sim: SimulatorConnection, open_id: str) -> None:
    code = sim.admin.mint_code(open_id, ["user.info.basic"], REDIRECT)
    assert_oauth_error(sim.exchange_code(code, "https://evil.example/cb"), "invalid_grant")
    assert "access_token" in sim.exchange_code(code, REDIRECT)


def test_pkce_needs_the_matching_verifier(sim: SimulatorConnection, open_id: str) -> None:
    verifier, challenge = pkce_pair()
    code = sim.admin.mint_code(open_id, ["user.info.basic"], REDIRECT, code_challenge=challenge)
    assert_oauth_error(sim.exchange_code(code, REDIRECT), "invalid_grant")
    assert_oauth_error(sim.exchange_code(code, REDIRECT, pkce_pair()[0]), "invalid_grant")
    assert "access_token" in sim.exchange_code(code, REDIRECT, verifier)


def test_pkce_plain_method(sim: SimulatorConnection, open_id: str) -> None:
    code = sim.admin.mint_code(
        open_id, ["user.info.basic"], REDIRECT, code_challenge="v" * 50, code_challenge_method="plain"
    )
    assert_oauth_error(sim.exchange_code(code, REDIRECT, "w" * 50), "invalid_grant")
    assert "access_token" in sim.exchange_code(code, REDIRECT, "v" * 50)


@pytest.mark.parametrize("override", [{"client_secret": "wrong"}, {"client_key": "someone-else"}])
def test_wrong_client_credentials_are_invalid_client(
    sim: SimulatorConnection, open_id: str, override: dict[str, str]
) -> None:
    code = sim.admin.mint_code(open_id, ["user.info.basic"], REDIRECT)
    form = {
        "client_key": sim.client_key,
        "client_secret": sim.client_secret,
        "code": code,
        "grant_type": "authorization_code",
        "redirect_uri": REDIRECT,
        **override,
    }
    assert_oauth_error(sim.session.post(sim.token_url, data=form, timeout=10).json(), "invalid_client")
    tokens = sim.get_tokens(open_id, ["user.info.basic"])
    refresh = {**form, "grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
    refresh.pop("code")
    assert_oauth_error(sim.session.post(sim.token_url, data=refresh, timeout=10).json(), "invalid_client")


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({}, "invalid_request"),
        ({"grant_type": "authorization_code", "redirect_uri": REDIRECT}, "invalid_request"),
        ({"grant_type": "authorization_code", "code": "x"}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
    ],
    ids=["client-credentials", "password", "no-grant-type", "no-code", "no-redirect-uri", "no-refresh-token"],
)
def test_bad_token_requests(sim: SimulatorConnection, form: dict[str, str], error: str) -> None:
    assert_oauth_error(sim.token_request(**form), error)


def test_missing_client_secret_is_invalid_request(sim: SimulatorConnection) -> None:
    answer = sim.session.post(
        sim.token_url, data={"client_key": sim.client_key, "grant_type": "refresh_token"}, timeout=10
    ).json()
    assert_oauth_error(answer, "invalid_request")


@pytest.mark.parametrize("path", ["/v2/oauth/token/", "/v2/oauth/revoke/"])
def test_a_body_that_is_not_form_encoded_is_invalid_request(sim: SimulatorConnection, open_id: str, path: str) -> None:
    code = sim.admin.mint_code(open_id, ["user.info.basic"], REDIRECT)
    form = {
        "client_key": sim.client_key,
        "client_secret": sim.client_secret,
        "code": code,
        "grant_type": "authorization_code",
        "redirect_uri": REDIRECT,
        "token": "x",
    }
    answer = sim.session.post(f"{sim.base_url}{path}", json=form, timeout=10)
    assert_oauth_error(answer.json(), "invalid_request")
    multipart = sim.session.post(f"{sim.base_url}{path}", files={k: (None, v) for k, v in form.items()}, timeout=10)
    assert_oauth_error(multipart.json(), "invalid_request")


def test_refresh_rotates_and_the_old_refresh_token_stops_working(sim: SimulatorConnection, open_id: str) -> None:
    first = sim.get_tokens(open_id, ["user.info.basic", "video.list"])
    second = sim.refresh(first.refresh_token)
    assert set(second) == SUCCESS_FIELDS
    assert second["refresh_token"] != first.refresh_token
    assert second["access_token"] != first.access_token
    assert second["scope"] == "user.info.basic,video.list"
    assert second["open_id"] == open_id
    assert_oauth_error(sim.refresh(first.refresh_token), "invalid_grant")
    third = sim.refresh(second["refresh_token"])
    assert "access_token" in third
    # The access token issued before the refresh keeps working until its own expiry.
    assert sim.display(first).user_info("open_id").json()["error"]["code"] == "ok"
    statuses = {row["fingerprint"]: row["status"] for row in sim.admin.tokens(open_id)}
    assert statuses[token_fingerprint(first.refresh_token)] == "rotated"
    assert statuses[token_fingerprint(second["refresh_token"])] == "rotated"
    assert statuses[token_fingerprint(third["refresh_token"])] == "active"


def test_an_unknown_refresh_token_is_invalid_grant(sim: SimulatorConnection) -> None:
    assert_oauth_error(sim.refresh("rft.nosuchtoken"), "invalid_grant")


def test_admin_expire_makes_access_tokens_fail_and_refresh_recovers(sim: SimulatorConnection, open_id: str) -> None:
    tokens = sim.get_tokens(open_id, ["user.info.basic"])
    assert sim.admin.expire_access_tokens(open_id) == 1
    assert sim.display(tokens).user_info("open_id").json()["error"]["code"] == "access_token_invalid"
    fresh = sim.refresh(tokens.refresh_token)
    assert sim.display(fresh["access_token"]).user_info("open_id").json()["error"]["code"] == "ok"


def test_admin_revoke_kills_both_tokens(sim: SimulatorConnection, open_id: str) -> None:
    tokens = sim.get_tokens(open_id, ["user.info.basic"])
    assert sim.admin.revoke(open_id) == {"access": 1, "refresh": 1}
    assert sim.display(tokens).user_info("open_id").status_code == 401
    assert_oauth_error(sim.refresh(tokens.refresh_token), "invalid_grant")


def test_admin_revoke_of_access_only_leaves_refresh_usable(sim: SimulatorConnection, open_id: str) -> None:
    tokens = sim.get_tokens(open_id, ["user.info.basic"])
    assert sim.admin.revoke(open_id, refresh=False) == {"access": 1, "refresh": 0}
    assert sim.display(tokens).user_info("open_id").status_code == 401
    assert "access_token" in sim.refresh(tokens.refresh_token)


def test_revoke_endpoint_withdraws_the_authorization(sim: SimulatorConnection, open_id: str) -> None:
    tokens = sim.get_tokens(open_id, ["user.info.basic"])
    revoke_url = f"{sim.base_url}/v2/oauth/revoke/"
    form = {"client_key": sim.client_key, "client_secret": sim.client_secret, "token": tokens.access_token}
    wrong = sim.session.post(revoke_url, data={**form, "client_secret": "nope"}, timeout=10).json()
    assert_oauth_error(wrong, "invalid_client")
    assert sim.display(tokens).user_info("open_id").status_code == 200
    response = sim.session.post(revoke_url, data=form, timeout=10)
    assert response.status_code == 200
    assert LOG_ID_PATTERN.match(response.json()["log_id"])
    assert "error" not in response.json()
    assert sim.display(tokens).user_info("open_id").status_code == 401
    assert_oauth_error(sim.refresh(tokens.refresh_token), "invalid_grant")
    again = sim.session.post(revoke_url, data={**form, "token": "act.unknown"}, timeout=10)
    assert again.status_code == 200 and "error" not in again.json()


@pytest.fixture(scope="module")
def clock_sim() -> Iterator[SimulatorProcess]:
    """A simulator whose clock these tests move."""
    with running_simulator(seed=3, accounts=1, videos=5) as process:
        yield process


def test_access_token_expires_with_the_simulated_clock(clock_sim: SimulatorProcess) -> None:
    open_id = clock_sim.admin.create_account(videos=1)["open_id"]
    tokens = clock_sim.get_tokens(open_id, ["user.info.basic"])
    api = clock_sim.display(tokens)
    clock_sim.admin.advance_clock(7200 - 30)
    assert api.user_info("open_id").status_code == 200
    clock_sim.admin.advance_clock(60)
    assert api.user_info("open_id").json()["error"]["code"] == "access_token_invalid"
    assert "access_token" in clock_sim.refresh(tokens.refresh_token)


def test_old_access_token_lives_until_its_own_expiry_after_a_refresh(clock_sim: SimulatorProcess) -> None:
    open_id = clock_sim.admin.create_account(videos=1)["open_id"]
    tokens = clock_sim.get_tokens(open_id, ["user.info.basic"])
    clock_sim.admin.advance_clock(3600)
    fresh = clock_sim.refresh(tokens.refresh_token)
    assert clock_sim.display(tokens).user_info("open_id").status_code == 200
    clock_sim.admin.advance_clock(3700)
    assert clock_sim.display(tokens).user_info("open_id").status_code == 401
    assert clock_sim.display(fresh["access_token"]).user_info("open_id").status_code == 200


def test_refresh_token_expires_after_refresh_ttl(clock_sim: SimulatorProcess) -> None:
    open_id = clock_sim.admin.create_account(videos=1)["open_id"]
    tokens = clock_sim.get_tokens(open_id, ["user.info.basic"])
    clock_sim.admin.advance_clock(15552000 + 1)
    assert_oauth_error(clock_sim.refresh(tokens.refresh_token), "invalid_grant")


def test_a_code_expires_after_ten_minutes(clock_sim: SimulatorProcess) -> None:
    open_id = clock_sim.admin.create_account(videos=1)["open_id"]
    late = clock_sim.admin.mint_code(open_id, ["user.info.basic"], REDIRECT)
    in_time = clock_sim.admin.mint_code(open_id, ["user.info.basic"], REDIRECT)
    clock_sim.admin.advance_clock(9 * 60)
    assert "access_token" in clock_sim.exchange_code(in_time, REDIRECT)
    clock_sim.admin.advance_clock(61)
    assert_oauth_error(clock_sim.exchange_code(late, REDIRECT), "invalid_grant")


def test_ttls_and_oauth_error_status_are_configurable(clock_sim: SimulatorProcess) -> None:
    open_id = clock_sim.admin.create_account(videos=1)["open_id"]
    clock_sim.admin.set_config(access_ttl=60, refresh_ttl=120, oauth_error_status=400)
    try:
        tokens = clock_sim.get_tokens(open_id, ["user.info.basic"])
        assert (tokens.expires_in, tokens.refresh_expires_in) == (60, 120)
        response = clock_sim.session.post(
            clock_sim.token_url,
            data={"client_key": "x", "client_secret": "y", "grant_type": "refresh_token", "refresh_token": "z"},
            timeout=10,
        )
        assert response.status_code == 400
        assert_oauth_error(response.json(), "invalid_client")
    finally:
        clock_sim.admin.set_config(access_ttl=7200, refresh_ttl=15552000, oauth_error_status=200)
