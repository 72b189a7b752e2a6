"""A time limit for one account's work inside a batch task, under the task's own ``execution_timeout``.

Airflow times a task out with ``SIGALRM`` (``airflow.sdk.execution_time.timeout``): the whole task
fails, whatever it was doing. A batch task (:meth:`~tiktok_pipeline.operators._TikTokToPostgresOperator._execute_batch`)
runs up to 50 accounts in turn, so it gives each account the limit one account's own task would
have had, and the batch as a whole that limit times its number of accounts: an account that runs
over is stopped and named, the others go on, and a retry resumes it (a whole-history sync from its
last committed page).

:func:`account_time_limit` arms the same ``SIGALRM`` timer for the account, and on the way out puts
the task's own timer back with what is left of it; when the task's own timer would ring first,
it stays in charge. Only the main thread can take signals: elsewhere (and where there is no
``SIGALRM``) the account runs without a limit of its own, as Airflow does.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta


class AccountTimeLimitReached(BaseException):
    """One account of a batch ran past its time limit; the batch goes on with the next account.

    A ``BaseException`` (like Airflow's ``AirflowTaskTimeout``), so that no ``except Exception`` on
    the way -- a best-effort archive, a retry policy -- takes it for an ordinary error and carries on.
    """


def _supported() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextmanager
def account_time_limit(limit: timedelta | None, message: str) -> Iterator[None]:
    """Raise :class:`AccountTimeLimitReached` (``message``) if the block runs longer than ``limit``.

    :param limit: None or zero: no limit of its own (the task's own timeout still applies).
    """
    seconds = limit.total_seconds() if limit else 0.0
    if seconds <= 0 or not _supported():
        yield
        return
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)  # the task's own timeout: 0.0 when none is armed
    if 0 < outer_left <= seconds:
        yield  # the task's own timeout rings first: it stays in charge
        return

    def ring(signum: int, frame: object) -> None:
        raise AccountTimeLimitReached(message)

    started = time.monotonic()
    outer_handler = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_left > 0:  # put the task's own timer back with what is left of it (at once, if it is due)
            signal.setitimer(signal.ITIMER_REAL, max(outer_left - (time.monotonic() - started), 1e-3))
