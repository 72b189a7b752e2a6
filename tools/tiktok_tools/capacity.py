"""How many accounts fit in TikTok's rate limit: calls per day per endpoint, printed.

``python -m tiktok_tools.capacity --accounts A --videos V [--cover-hours 6] [--recent-videos R]``

TikTok allows 600 requests a minute per app and endpoint (864,000 a day). What the DAGs spend:

- ``user/info``: the daily profile snapshot, one call per account.
- ``video/list``: the daily incremental sync, ``ceil(R / 20)`` pages per account (R: videos inside
  the sync's look-back window; at least one page); a full backfill, once, ``ceil(V / 20)`` pages.
- ``video/query``: keeping every cover fresh, each video once per cover lifetime, 20 ids a call and
  one account's ids per call (a token sees only its own videos): ``ceil(V / 20) * 24 / cover_hours``
  calls per account and day.

The largest number of accounts is set by the endpoint that runs out first.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

PER_CALL = 20  # video/list page size and video/query ids per call
LIMIT_PER_MINUTE = 600
MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class Capacity:
    accounts: int
    videos: int
    cover_hours: float
    recent_videos: int
    limit_per_minute: int = LIMIT_PER_MINUTE

    @property
    def per_day(self) -> int:
        """Requests one endpoint may take a day."""
        return self.limit_per_minute * MINUTES_PER_DAY

    def per_account(self) -> dict[str, float]:
        """Calls per account and day, per endpoint (steady state: no backfill)."""
        return {
            "user/info": 1.0,
            "video/list": float(max(1, math.ceil(self.recent_videos / PER_CALL))),
            "video/query": math.ceil(self.videos / PER_CALL) * 24 / self.cover_hours,
        }

    def per_day_calls(self) -> dict[str, float]:
        return {endpoint: n * self.accounts for endpoint, n in self.per_account().items()}

    def backfill_calls(self) -> int:
        """video/list pages of one full backfill of every account."""
        return self.accounts * max(1, math.ceil(self.videos / PER_CALL))

    def backfill_days(self, share: float = 0.8) -> float:
        """Days a full backfill of every account takes at ``share`` of video/list's budget (bulk leaves the reserve)."""
        return self.backfill_calls() / (self.per_day * share)

    def fits(self) -> dict[str, bool]:
        return {endpoint: calls <= self.per_day for endpoint, calls in self.per_day_calls().items()}

    def max_accounts(self) -> tuple[int, str]:
        """The most accounts whose steady state fits, and the endpoint that binds."""
        best = {endpoint: math.floor(self.per_day / n) for endpoint, n in self.per_account().items() if n > 0}
        endpoint = min(best, key=lambda e: best[e])
        return best[endpoint], endpoint


def report(c: Capacity) -> list[str]:
    lines = [
        f"{c.accounts:,} accounts x {c.videos:,} videos, covers live {c.cover_hours:g} h, "
        f"{c.recent_videos:,} recent videos per daily sync; limit {c.limit_per_minute}/min/endpoint "
        f"= {c.per_day:,}/day",
        f"{'endpoint':<12} {'calls/day':>14} {'of limit':>9}  fits",
    ]
    for endpoint, calls in c.per_day_calls().items():
        share = calls / c.per_day
        lines.append(f"{endpoint:<12} {calls:>14,.0f} {share:>9.1%}  {'yes' if share <= 1 else 'NO'}")
    most, binding = c.max_accounts()
    lines.append(
        f"full backfill (once): {c.backfill_calls():,} video/list calls, "
        f"{c.backfill_days():.2f} days at 80% of video/list's budget"
    )
    lines.append(f"max accounts with {c.videos:,} videos each: {most:,} (bound by {binding})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tiktok_tools.capacity", description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, required=True, help="connected accounts (A)")
    parser.add_argument("--videos", type=int, required=True, help="videos per account (V)")
    parser.add_argument("--cover-hours", type=float, default=6.0, help="how long a cover URL lives (6)")
    parser.add_argument(
        "--recent-videos", type=int, default=20, help="videos per account inside the daily sync's look-back (20)"
    )
    parser.add_argument("--limit-per-minute", type=int, default=LIMIT_PER_MINUTE, help="per app and endpoint (600)")
    args = parser.parse_args(argv)
    if args.accounts < 0 or args.videos < 0 or args.cover_hours <= 0 or args.limit_per_minute < 1:
        parser.error("accounts and videos must be >= 0, cover hours > 0, the limit >= 1")
    c = Capacity(args.accounts, args.videos, args.cover_hours, args.recent_videos, args.limit_per_minute)
    print("\n".join(report(c)))
    return 0 if all(c.fits().values()) else 1


if __name__ == "__main__":
    sys.exit(main())
