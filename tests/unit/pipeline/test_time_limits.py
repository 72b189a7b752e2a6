"""One account's time limit inside a batch task, under the task's own SIGALRM timeout."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from tiktok_pipeline.time_limits import AccountTimeLimitReached, account_time_limit


class TaskTimeout(BaseException):
    pass


@pytest.fixture
def task_timer() -> Iterator[None]:
    """The task's own execution_timeout, as Airflow arms it: a SIGALRM handler and an interval timer."""

    def ring(signum: int, frame: object) -> None:
        raise TaskTimeout()

    left, _ = signal.getitimer(signal.ITIMER_REAL)  # pytest-timeout's, if it is armed
    started = time.monotonic()
    before = signal.signal(signal.SIGALRM, ring)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, before)
    if left:
        signal.setitimer(signal.ITIMER_REAL, max(left - (time.monotonic() - started), 1e-3))


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.005)


def test_the_account_is_stopped_and_the_task_timer_is_put_back_with_what_is_left(task_timer: None) -> None:
    signal.setitimer(signal.ITIMER_REAL, 30)
    with pytest.raises(AccountTimeLimitReached, match="over"), account_time_limit(timedelta(seconds=0.05), "over"):
        spin(5)
    left, _ = signal.getitimer(signal.ITIMER_REAL)
    assert 0 < left <= 30, "the task's own timeout is armed again"
    with pytest.raises(TaskTimeout):  # and it is the task's handler that rings
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        spin(5)


def test_when_the_task_timer_rings_first_it_stays_in_charge(task_timer: None) -> None:
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    with pytest.raises(TaskTimeout), account_time_limit(timedelta(seconds=10), "never"):
        spin(5)


def test_an_account_within_its_limit_leaves_the_task_timer_as_it_was(task_timer: None) -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)
    with account_time_limit(timedelta(seconds=10), "never"):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0), "no timer was armed before: none is left"
    signal.setitimer(signal.ITIMER_REAL, 30)
    with account_time_limit(timedelta(seconds=10), "never"):
        pass
    with account_time_limit(None, "no limit"):
        pass
    assert 29 < signal.getitimer(signal.ITIMER_REAL)[0] <= 30


def test_what_runs_after_the_account_is_stopped_is_still_under_the_task_timer(task_timer: None) -> None:
    """Once the account's limit rang, its code unwinding (a sync waiting for its fetch thread) is bounded.

    Before, neither timer was armed between the account's alarm and the end of the block: a cleanup
    that hung (a fetch thread waiting for the shared rate budget) hung with no timeout at all.
    """
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    unwound = False
    try:
        try:
            with account_time_limit(timedelta(seconds=0.05), "over"):
                try:
                    spin(5)
                finally:
                    spin(5)
                    unwound = True
        except AccountTimeLimitReached:
            spin(5)  # (before: the task's timer, due long ago, rang only here)
    except TaskTimeout:
        pass
    assert not unwound, "the task's own timeout rang while the account was being stopped"
    spin(0.2)  # and it rang once: not armed again on the way out (a second AirflowTaskTimeout mid-report)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
