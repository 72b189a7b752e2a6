"""Cut an account's videos into ``video/list`` pages: the cursor rule and page imperfections.

The cursor rule
---------------
Videos are listed newest first.  Internally every video has a creation time in milliseconds,
unique within its account (its ``create_time`` second * 1000 + a millisecond).  A request with
``cursor = C`` returns the newest videos with ``ms < C``; no cursor (or ``0``) means "from now".
The response's ``cursor`` is the ``ms`` of the oldest video on the page.  Because the ``ms``
values are unique, following the returned cursor visits every video exactly once, even when
several videos share a ``create_time`` second.  A caller may pass its own timestamp: ``T * 1000``
gives the videos posted before second ``T`` (strictly), ``(T + 1) * 1000`` includes second ``T``.

Imperfections (``page_*_prob`` settings, drawn from their own seeded RNG, at most one per page)
never break that guarantee for a client that deduplicates by ``id`` and stops when ``has_more`` is
false or the cursor does not advance:

- **short**: fewer than ``max_count`` videos (at least one), ``has_more`` as usual.
- **empty**: no videos, ``has_more`` true, and a cursor just above the next video, so it still
  advances and nothing is skipped ("content filtering").
- **duplicate**: the cursor points 1-3 videos back into the page, so the next page starts with
  videos already seen (the time-based boundary duplicates the facts sheet warns about).  The
  cursor still moves strictly down, so a deduplicating client always progresses.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from tiktok_sim.accounts import Account, visible_bound_ms


@dataclass(frozen=True)
class Page:
    """Positions (into the account's columns) of one page, newest first, and what follows it."""

    positions: list[int]
    cursor: int
    has_more: bool
    imperfection: str | None = None


def _public_below(account: Account, upper_ms: int) -> Iterator[int]:
    """Yield positions of public videos with ``ms < upper_ms``, newest first."""
    position = bisect.bisect_left(account.ms, upper_ms) - 1
    while position >= 0:
        if account.ids[position] not in account.private:
            yield position
        position -= 1


def _imperfection(rng: random.Random, short: float, empty: float, duplicate: float) -> str | None:
    if short <= 0 and empty <= 0 and duplicate <= 0:
        return None
    roll = rng.random()
    if roll < empty:
        return "empty"
    if roll < empty + short:
        return "short"
    if roll < empty + short + duplicate:
        return "duplicate"
    return None


def next_page(
    account: Account,
    *,
    now: float,
    cursor: int | None,
    max_count: int,
    rng: random.Random,
    short_prob: float = 0.0,
    empty_prob: float = 0.0,
    duplicate_prob: float = 0.0,
) -> Page:
    """Return the page that ``cursor`` (``None`` for the first) asks for."""
    bound = visible_bound_ms(now)
    upper = bound if cursor is None else min(cursor, bound)
    kind = _imperfection(rng, short_prob, empty_prob, duplicate_prob)
    if kind == "empty":
        following = next(_public_below(account, upper), None)
        if following is not None:
            skip_to = account.ms[following] + 1
            if cursor is None or skip_to < cursor:
                return Page([], skip_to, True, "empty")
        kind = None
    take = max_count
    if kind == "short":
        if max_count > 1:
            take = rng.randint(1, max_count - 1)
        else:
            kind = None
    videos = _public_below(account, upper)
    positions = list(islice(videos, take))
    if not positions:
        return Page([], cursor or 0, False)
    if kind == "duplicate" and len(positions) >= 2:
        back = rng.randint(1, min(3, len(positions) - 1))
        return Page(positions, account.ms[positions[-1 - back]], True, "duplicate")
    if kind == "duplicate":
        kind = None
    has_more = next(videos, None) is not None
    return Page(positions, account.ms[positions[-1]], has_more, kind)
