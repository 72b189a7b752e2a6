"""The sliding-window rate limit: 429 ``rate_limit_exceeded`` past the budget, per endpoint."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tiktok_sim.testing import SimulatorProcess, running_simulator

Check = Callable[[requests.Response, str, int], dict[str, Any]]
LIMIT = 5
WINDOW = 5.0  # long enough that a slow machine never sees the window slide mid-test
SHORT_WINDOW = 1.0  # for the one test that waits for it to slide


@pytest.fixture(scope="module")
def limited_sim() -> Iterator[SimulatorProcess]:
    with running_simulator(seed=9, accounts=1, videos=10, rate_limit=LIMIT, rate_window=WINDOW) as process:
        yield process


@pytest.fixture(autouse=True)
def fresh_windows(limited_sim: SimulatorProcess) -> Iterator[None]:
    limited_sim.admin.reset_rate_limits()
    yield
    limited_sim.admin.set_config(rate_scope="app", rate_retry_after=False)


def test_the_request_after_the_budget_gets_429(limited_sim: SimulatorProcess, check_envelope: Check) -> None:
    api = limited_sim.connected_account(videos=2).api
    limited_sim.admin.reset_rate_limits()
    limited_sim.admin.reset_stats()
    for _ in range(LIMIT):
        check_envelope(api.user_info("open_id"), "ok", 200)
    refused = api.user_info("open_id")
    check_envelope(refused, "rate_limit_exceeded", 429)
    assert "Retry-After" not in refused.headers
    # The budget is per endpoint.
    check_envelope(api.video_list("id"), "ok", 200)
    stats = limited_sim.admin.stats()
    assert stats["endpoints"]["user_info"]["statuses"] == {"200": LIMIT, "429": 1}
    assert stats["endpoints"]["user_info"]["rate_limited"] == 1
    assert stats["rate_limited"] == 1


def test_the_window_slides_and_refusals_do_not_extend_it(limited_sim: SimulatorProcess) -> None:
    api = limited_sim.connected_account(videos=2).api
    limited_sim.admin.set_config(rate_window=SHORT_WINDOW)
    try:
        limited_sim.admin.reset_rate_limits()
        started = time.monotonic()
        for _ in range(LIMIT):
            assert api.user_info("open_id").status_code == 200
        refusals = 0
        while api.user_info("open_id").status_code == 429:
            refusals += 1
            assert time.monotonic() - started < SHORT_WINDOW + 1.5
            time.sleep(0.05)
        assert refusals > 0
        assert time.monotonic() - started >= SHORT_WINDOW - 0.1
    finally:
        limited_sim.admin.set_config(rate_window=WINDOW)


def test_the_budget_is_per_app_by_default_and_per_token_when_configured(limited_sim: SimulatorProcess) -> None:
    first = limited_sim.connected_account(videos=1).api
    second = limited_sim.connected_account(videos=1).api
    limited_sim.admin.reset_rate_limits()
    for _ in range(LIMIT):
        assert first.user_info("open_id").status_code == 200
    assert second.user_info("open_id").status_code == 429
    limited_sim.admin.set_config(rate_scope="token")
    limited_sim.admin.reset_rate_limits()
    for _ in range(LIMIT):
        assert first.user_info("open_id").status_code == 200
    assert first.user_info("open_id").status_code == 429
    assert second.user_info("open_id").status_code == 200


def test_retry_after_is_sent_only_when_enabled(limited_sim: SimulatorProcess) -> None:
    api = limited_sim.connected_account(videos=1).api
    limited_sim.admin.set_config(rate_retry_after=True)
    limited_sim.admin.reset_rate_limits()
    for _ in range(LIMIT):
        api.user_info("open_id")
    refused = api.user_info("open_id")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= WINDOW


def test_the_token_endpoint_is_limited_too(limited_sim: SimulatorProcess) -> None:
    for _ in range(LIMIT):
        assert limited_sim.refresh("rft.unknown")["error"] == "invalid_grant"
    response = limited_sim.session.post(
        limited_sim.token_url,
        data={"client_key": "k", "client_secret": "s", "grant_type": "refresh_token", "refresh_token": "r"},
        timeout=10,
    )
    assert response.status_code == 429
    assert response.json()["error"] == "temporarily_unavailable"


def test_limits_are_adjustable_at_runtime(limited_sim: SimulatorProcess) -> None:
    api = limited_sim.connected_account(videos=1).api
    limited_sim.admin.set_config(rate_limit=2)
    try:
        limited_sim.admin.reset_rate_limits()
        assert [api.user_info("open_id").status_code for _ in range(3)] == [200, 200, 429]
    finally:
        limited_sim.admin.set_config(rate_limit=LIMIT)
