"""The rate budget's pure logic: reserve arithmetic, priorities, poll delays, the app key, fallbacks."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from tiktok_provider import budget
from tiktok_provider.budget import (
    ProcessBudget,
    SharedBudget,
    StoreUnavailable,
    app_key,
    budget_for,
    fallback_limit,
    poll_delay,
    reserve_slots,
    skip_for,
)


def test_bulk_leaves_the_reserve_rounded_up() -> None:
    assert reserve_slots(600, 0.2) == 120
    assert reserve_slots(60, 0.2) == 12
    assert reserve_slots(7, 0.2) == 2  # ceil: at least the share asked
    assert reserve_slots(1, 0.5) == 0  # a bulk caller can still send when the limit is 1
    assert reserve_slots(600, 0) == 0
    with pytest.raises(ValueError, match="rate_budget_reserve"):
        reserve_slots(600, 1.0)


def test_only_bulk_skips() -> None:
    assert skip_for("interactive", 600, 0.2) == 0
    assert skip_for("normal", 600, 0.2) == 0
    assert skip_for("bulk", 600, 0.2) == 120
    with pytest.raises(ValueError, match="priority"):
        skip_for("urgent", 600, 0.2)


def test_fallback_share_is_conservative_but_never_zero() -> None:
    assert fallback_limit(540, 0.125) == 67
    assert fallback_limit(4, 0.125) == 1


def test_poll_delay_follows_the_hint_within_bounds() -> None:
    assert 0.002 <= poll_delay(0.0) <= 0.0025
    assert 0.1 <= poll_delay(0.1) <= 0.12
    assert poll_delay(30) <= budget.MAX_POLL_SECONDS * 1.2
    assert poll_delay(None) >= budget.MAX_POLL_SECONDS


def test_the_app_key_hides_the_client_key() -> None:
    key = app_key("https://open.tiktokapis.com", "aw-secret-client-key")
    assert "aw-secret" not in key and len(key) == 24
    assert key == app_key("https://open.tiktokapis.com", "aw-secret-client-key")
    assert key != app_key("https://open.tiktokapis.com", "another")


class DeadStore:
    """A store that is always unreachable (what a Postgres outage looks like to the budget)."""

    kind = "postgres"

    def __init__(self) -> None:
        self.attempts = 0

    def try_acquire(self, *args: object) -> tuple[object, float | None]:
        self.attempts += 1
        raise StoreUnavailable("OperationalError: connection refused")

    def release(self, *args: object) -> None:
        raise StoreUnavailable("OperationalError: connection refused")

    def pause(self, *args: object) -> None:
        raise StoreUnavailable("OperationalError: connection refused")


def test_an_unreachable_store_waits_a_window_then_paces_alone_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    slept: list[float] = []
    store = DeadStore()
    b = SharedBudget(store, "app", "/v2/user/info/", 80, 0.05, fallback_share=0.125, sleep=slept.append)
    with caplog.at_level(logging.WARNING, logger="tiktok_provider.budget"):
        with b.slot() as waited:
            pass
        for _ in range(5):
            with b.slot():
                pass
    assert slept and slept[0] == pytest.approx(0.05, abs=0.01), "one window of cool-down first"
    assert waited >= 0.04
    assert store.attempts == 1, "the store is retried only every few seconds, not per request"
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1, "once per outage"
    assert "10 per" in warnings[0].getMessage()  # 1/8 of 80


def cfg(**overrides: object) -> SimpleNamespace:
    values = {
        "rate_budget": "postgres",
        "rate_budget_conn_id": "no_such_connection_for_budget_tests",
        "rate_budget_redis_url": None,
        "rate_budget_reserve": 0.2,
        "rate_budget_fallback_share": 0.125,
        "base_url": "https://unit.test",
        "client_key": "k",
        "rate_limit_per_minute": 540,
        "rate_limit_window_seconds": 60.0,
    }
    return SimpleNamespace(**{**values, **overrides})


def test_process_mode_and_absurd_limits_pace_per_process(caplog: pytest.LogCaptureFixture) -> None:
    budget._warned_process.clear()
    with caplog.at_level(logging.WARNING, logger="tiktok_provider.budget"):
        b = budget_for(cfg(rate_budget="process"), "/v2/unit-a/")
        budget_for(cfg(rate_budget="process"), "/v2/unit-b/")
    assert isinstance(b, ProcessBudget) and not b.shared
    assert len([r for r in caplog.records if "No shared rate budget" in r.getMessage()]) == 1, "once per process"
    assert isinstance(budget_for(cfg(rate_limit_per_minute=100_000), "/v2/unit-c/"), ProcessBudget)


def test_redis_without_a_url_falls_back() -> None:
    b = budget_for(cfg(rate_budget="redis", rate_budget_redis_url=None), "/v2/unit-d/")
    assert isinstance(b, ProcessBudget)


def test_a_postgres_url_makes_a_shared_budget_without_connecting() -> None:
    b = budget_for(cfg(rate_budget_conn_id="postgresql+psycopg2://u@127.0.0.1:1/db"), "/v2/unit-e/")
    assert isinstance(b, SharedBudget) and b.shared
    assert b.limit == 540 and b.window == 60.0 and b.fallback.limit == 67


def test_process_budget_pause_does_not_make_the_process_wait_twice() -> None:
    """Without a shared store only the caller knows of a 429, and its retry already waits it out."""
    from tiktok_provider.ratelimit import SlidingWindowLimiter

    b = ProcessBudget(SlidingWindowLimiter(5, 1))
    b.pause(30)
    with b.slot("bulk") as waited:
        pass
    assert waited < 1
