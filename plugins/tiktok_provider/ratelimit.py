"""Client-side pacing: a sliding-window limiter per API endpoint, shared by every hook in a process.

TikTok allows 600 requests per minute per endpoint over a sliding window. Pacing below that keeps a
healthy run free of 429s; across processes the ``tiktok_api`` pool bounds how many tasks pace at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class SlidingWindowLimiter:
    """Allow at most ``limit`` acquisitions in any ``window`` seconds; :meth:`acquire` waits its turn."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError(f"rate limit must be >= 1 per window > 0 s, got {limit} per {window} s")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until a request may go out; return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                while self._stamps and now - self._stamps[0] >= self.window:
                    self._stamps.popleft()
                if len(self._stamps) < self.limit:
                    self._stamps.append(now)
                    return waited
                delay = self.window - (now - self._stamps[0])
            self._sleep(delay)
            waited += delay


_registry: dict[tuple[str, str, int, float], SlidingWindowLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(base_url: str, endpoint: str, limit: int, window: float) -> SlidingWindowLimiter:
    """Return the process-wide limiter for one endpoint of one API host."""
    key = (base_url, endpoint, limit, window)
    with _registry_lock:
        if key not in _registry:
            _registry[key] = SlidingWindowLimiter(limit, window)
        return _registry[key]
