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

**Never inside a token call.** The account's limit does not stop a token refresh or code exchange
(:data:`_UNINTERRUPTED`): TikTok rotates the refresh token as soon as it reads the request, so a
refresh stopped before its answer is stored leaves the store with a refresh token TikTok no longer
takes, and the account needs its creator to authorize the app again. When the limit rings inside
one, it looks again every :data:`DEFER_SECONDS` and stops the account once the call is over (its
lease, cutoff and the store's retries bound it: :mod:`tiktok_warehouse.tokens`) -- but never
later than the task's own timeout would have rung: that one is Airflow's, and rings where it would. A refresh in the
background fetch thread of a sync is safe as it is: the account's stop waits for that thread.

**Nor inside a request to Airflow's supervisor** (a connection, a variable, the task state store:
``SUPERVISOR_COMMS``). Its answers are read in order and not matched to their requests: one left
unread would be read as the answer to the next request, and every later one as the answer to the
one before, for the rest of the batch.

**The task's own timer is back as soon as the account's rings**, not only once the account's code
has unwound: what runs meanwhile (a sync waiting for its fetch thread to finish the request under
way, which may be waiting for the shared rate budget) is still bounded by the task's timeout.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import cache
from types import CodeType, FrameType

#: How soon the account's limit looks again when it rang inside a token call (:data:`_UNINTERRUPTED`).
DEFER_SECONDS = 0.25
#: The most the task's own timeout is put off, in all, while a token call or supervisor request ends
#: (:func:`task_timeout_spares_token_calls`): a refresh's lease and cutoff end it well within this.
TASK_TIMEOUT_GRACE_SECONDS = 300.0


class AccountTimeLimitReached(BaseException):
    """One account of a batch ran past its time limit; the batch goes on with the next account.

    A ``BaseException`` (like Airflow's ``AirflowTaskTimeout``), so that no ``except Exception`` on
    the way -- a best-effort archive, a retry policy -- takes it for an ordinary error and carries on.
    """


@cache
def _uninterrupted() -> frozenset[CodeType]:
    """The code an account's limit does not stop: a token call, from the request sent to its answer stored,
    and a request to Airflow's supervisor, from the request sent to its answer read."""
    from tiktok_provider.auth import AccessTokens, OAuthCalls

    codes = {AccessTokens._refreshed.__code__, OAuthCalls.token_call.__code__}
    try:  # the warehouse's store, when installed: its lease, TikTok's answer and the write that keeps it
        from tiktok_warehouse.tokens import TokenStore

        codes |= {TokenStore.refresh_locked.__code__, TokenStore.save_grant.__code__}
    except ImportError:
        pass
    try:  # a request to the task's supervisor: its answers are read in order, not matched to their request
        from airflow.sdk.execution_time.comms import CommsDecoder

        codes.add(CommsDecoder.send.__code__)
    except (ImportError, AttributeError):
        pass
    return frozenset(codes)


def _in_token_call(frame: FrameType | None) -> bool:
    uninterrupted = _uninterrupted()
    while frame is not None:
        if frame.f_code in uninterrupted:
            return True
        frame = frame.f_back
    return False


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

    back = False

    def put_back() -> None:
        """The task's own handler, and its timer with what is left of it (at once, if it is due); once."""
        nonlocal back
        if back:  # the account's limit rang: the task's timer has been running since (and may have rung)
            return
        signal.setitimer(signal.ITIMER_REAL, 0)  # first: once this is done, ours cannot ring half-way through
        back = True
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_left > 0:
            signal.setitimer(signal.ITIMER_REAL, max(outer_left - (time.monotonic() - started), 1e-3))

    def ring(signum: int, frame: FrameType | None) -> None:
        if _in_token_call(frame):
            task_left = outer_left - (time.monotonic() - started) if outer_left > 0 else DEFER_SECONDS
            if task_left <= 0:
                put_back()  # never later than the task's own timeout: it rings now, as it would have
            else:  # look again once the call may be over (or when the task's own timeout is due)
                signal.setitimer(signal.ITIMER_REAL, min(DEFER_SECONDS, task_left))
            return
        put_back()  # what unwinds the account from here is under the task's own timeout again
        raise AccountTimeLimitReached(message)

    started = time.monotonic()
    outer_handler = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        put_back()


@contextmanager
def task_timeout_spares_token_calls(grace: float = TASK_TIMEOUT_GRACE_SECONDS) -> Iterator[None]:
    """Put the task's own timeout (Airflow's SIGALRM handler) off while a token call or supervisor request ends.

    Airflow's ``execution_timeout`` raises wherever the task is, as an account's limit would: inside
    a token refresh that loses the refresh token TikTok has just rotated. Within this block its
    handler is wrapped: when it rings inside such a call it rings again every :data:`DEFER_SECONDS`,
    for ``grace`` seconds in all at most, and then as it would have. Elsewhere it rings at once.
    """
    if not _supported():
        yield
        return
    airflow_handler = signal.getsignal(signal.SIGALRM)
    if not callable(airflow_handler):  # no handler of Airflow's (no execution_timeout): nothing to wrap
        yield
        return
    put_off = 0.0

    def ring(signum: int, frame: FrameType | None) -> None:
        nonlocal put_off
        if put_off < grace and _in_token_call(frame):
            put_off += DEFER_SECONDS
            signal.setitimer(signal.ITIMER_REAL, DEFER_SECONDS)
            return
        airflow_handler(signum, frame)

    signal.signal(signal.SIGALRM, ring)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGALRM) is ring:
            signal.signal(signal.SIGALRM, airflow_handler)
