"""Fixtures for the simulator's tests: every test talks to a real subprocess over HTTP.

``sim`` is one simulator shared by the whole session: tests on it only create their own accounts
and never change settings, faults or the clock.  Tests that do change them start their own with
``running_simulator`` (cheap: under a second).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tiktok_sim.testing import LOG_ID_PATTERN, ConnectedAccount, SimulatorConnection, running_simulator


@pytest.fixture(scope="session")
def sim() -> Iterator[SimulatorConnection]:
    with running_simulator(seed=42, accounts=3, videos=120) as process:
        yield process


@pytest.fixture
def creator(sim: SimulatorConnection) -> ConnectedAccount:
    """A fresh 30-video account of the shared simulator, with every scope."""
    return sim.connected_account(videos=30)


def assert_envelope(response: requests.Response, code: str, status: int) -> dict[str, Any]:
    """Check status, envelope, log_id format and the matching ``x-tt-logid`` header; return the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    error = body["error"]
    assert error["code"] == code, body
    assert isinstance(error["message"], str)
    assert LOG_ID_PATTERN.match(error["log_id"]), error["log_id"]
    assert response.headers["x-tt-logid"] == error["log_id"]
    if code == "ok":
        assert error["message"] == ""
        assert isinstance(body["data"], dict)
    else:
        assert error["message"]
        assert body["data"] == {}
    return body


@pytest.fixture
def check_envelope() -> Callable[[requests.Response, str, int], dict[str, Any]]:
    """Return :func:`assert_envelope`."""
    return assert_envelope
