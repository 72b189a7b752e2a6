"""Keep the simulated clock that every expiry (tokens, codes, cover URLs) is measured on.

``sim_now = wall time + offset``.  The admin API moves the offset forward (or sets an absolute
time) so tests can expire a 6-hour cover URL or a 180-day refresh token without sleeping.  The
clock can also be frozen, which makes growing counts stable between two reads.  Rate limiting
deliberately does not use this clock: it is about request pacing, so it uses real time.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SimClock:
    """Simulated UTC time in Unix seconds (float)."""

    def __init__(
        self,
        *,
        start: float | None = None,
        frozen: bool = False,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._wall = wall
        self._offset = 0.0 if start is None else start - wall()
        self._frozen_at: float | None = None
        if frozen:
            self.freeze()

    def now(self) -> float:
        """Return the simulated time."""
        if self._frozen_at is not None:
            return self._frozen_at
        return self._wall() + self._offset

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    @property
    def offset(self) -> float:
        """Seconds between simulated and wall time."""
        return self.now() - self._wall()

    def advance(self, seconds: float) -> float:
        """Move the clock forward (or back, if negative) and return the new time."""
        if self._frozen_at is not None:
            self._frozen_at += seconds
        else:
            self._offset += seconds
        return self.now()

    def set(self, at: float) -> float:
        """Jump to an absolute Unix time and return it."""
        if self._frozen_at is not None:
            self._frozen_at = at
        else:
            self._offset = at - self._wall()
        return self.now()

    def freeze(self) -> None:
        """Stop the clock at the current simulated time; ``advance`` still moves it."""
        if self._frozen_at is None:
            self._frozen_at = self.now()

    def unfreeze(self) -> None:
        """Let the clock run again from where it stands."""
        if self._frozen_at is not None:
            self._offset = self._frozen_at - self._wall()
            self._frozen_at = None
