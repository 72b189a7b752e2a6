"""Limit requests per endpoint with a sliding window measured in real (wall) time.

The real API allows 600 requests per minute per endpoint in a sliding one-minute window; whether
the budget is per app or per token is not documented, so both are configurable (``rate_scope``).
Only admitted requests take budget: a 429 does not push the window further out, so a client that
backs off recovers as soon as the oldest admitted request leaves the window.  The simulated clock
is not used here, because pacing is about real time; advancing the clock does not reset limits.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0


class SlidingWindowLimiter:
    """Count admitted requests per ``(endpoint, key)`` in the last ``window`` seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._hits: dict[tuple[str, str], deque[float]] = {}

    def hit(self, endpoint: str, key: str, limit: int, window: float) -> Decision:
        """Admit and count one request, or refuse it with the seconds until one would be admitted."""
        now = self._clock()
        hits = self._hits.setdefault((endpoint, key), deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= limit:
            return Decision(False, max(0.0, hits[len(hits) - limit] + window - now))
        hits.append(now)
        return Decision(True)

    def reset(self) -> None:
        self._hits.clear()
