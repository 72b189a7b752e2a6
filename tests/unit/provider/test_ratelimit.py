"""The client-side sliding-window limiter, on a fake clock (no real sleeps)."""

from __future__ import annotations

import pytest

from tiktok_provider.ratelimit import SlidingWindowLimiter


class FakeTime:
    """A clock that only moves when someone sleeps; ``on_sleep`` runs after each sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.on_sleep = lambda: None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep()


def limiter(t: FakeTime, limit: int, window: float) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(limit, window, clock=t.clock, sleep=t.sleep, poll=0.5)


def test_a_slot_frees_one_window_after_the_answer_not_after_the_send() -> None:
    t = FakeTime()
    lim = limiter(t, 2, 10.0)
    assert lim.acquire() == 0.0
    assert lim.acquire() == 0.0
    t.now = 1.0
    lim.release()  # the first answer came back at t=1: the API stamped that request at or before 1
    t.now = 2.0
    lim.release()
    t.now = 3.0
    assert lim.acquire() == pytest.approx(8.0), "sent at 11 = 1 + window, not at 10 = 0 + window"
    assert t.now == pytest.approx(11.0)


def test_with_every_slot_in_flight_it_waits_for_an_answer() -> None:
    t = FakeTime()
    lim = limiter(t, 1, 5.0)
    lim.acquire()
    t.on_sleep = lambda: lim.release() if len(t.sleeps) == 1 else None  # answered during the first poll
    assert lim.acquire() == pytest.approx(0.5 + 5.0)


def test_slot_releases_when_the_request_fails() -> None:
    t = FakeTime()
    lim = limiter(t, 1, 5.0)
    with pytest.raises(ConnectionError), lim.slot():
        raise ConnectionError("refused")
    t.now = 5.0
    with lim.slot() as waited:
        assert waited == 0.0


def test_rejects_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="rate limit"):
        SlidingWindowLimiter(0, 60.0)
