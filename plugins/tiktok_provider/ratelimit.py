"""Client-side pacing: a sliding-window limiter per API endpoint, shared by every hook in a process.

TikTok allows 600 requests per minute per endpoint over a sliding window. Pacing below that keeps a
healthy run free of 429s; across processes the ``tiktok_api`` pool bounds how many tasks pace at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tiktok_provider import metrics


class SlidingWindowLimiter:
    """Allow at most ``limit`` requests in any ``window`` seconds, as the API counts them.

    The API stamps a request when it arrives, a little after we sent it and by an amount that
    varies from request to request. A limiter that stamped at sending time and freed the slot
    exactly ``window`` seconds later would now and then send while the API still counts the old
    request, and get a 429. So a slot is taken by :meth:`acquire` and held until ``window``
    seconds after :meth:`release`, which the caller calls once the answer (or an error) came back:
    by then the API has stamped the request, so its window has ended when ours does.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll: float = 0.01,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError(f"rate limit must be >= 1 per window > 0 s, got {limit} per {window} s")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._poll = poll
        self._released: deque[float] = deque()  # release times, oldest first
        self._in_flight = 0
        self._lock = threading.Lock()
        #: The endpoint the limiter paces (names its ``tiktok.budget_waits`` metric).
        self.endpoint = "unknown"

    def acquire(self) -> float:
        """Block until a request may go out and take its slot; return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                while self._released and now - self._released[0] >= self.window:
                    self._released.popleft()
                if len(self._released) + self._in_flight < self.limit:
                    self._in_flight += 1
                    return waited
                # every slot in flight: wait for an answer (rare: it needs limit concurrent requests)
                delay = self.window - (now - self._released[0]) if self._released else self._poll
            self._sleep(delay)
            waited += delay

    def release(self) -> None:
        """Mark one acquired request as answered: its slot frees ``window`` seconds from now."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            self._released.append(self._clock())

    @contextmanager
    def slot(self) -> Iterator[float]:
        """Hold a slot around one request; yield the seconds waited for it."""
        waited = self.acquire()
        if waited > 0:
            metrics.budget_wait(self.endpoint, waited)
        try:
            yield waited
        finally:
            self.release()


_registry: dict[tuple[str, str, int, float], SlidingWindowLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(base_url: str, endpoint: str, limit: int, window: float) -> SlidingWindowLimiter:
    """Return the process-wide limiter for one endpoint of one API host."""
    key = (base_url, endpoint, limit, window)
    with _registry_lock:
        if key not in _registry:
            _registry[key] = SlidingWindowLimiter(limit, window)
            _registry[key].endpoint = endpoint
        return _registry[key]
