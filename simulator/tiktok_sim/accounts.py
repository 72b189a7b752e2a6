"""Keep the mutable account registry: accounts, their videos, deletions and privatisations.

An account's videos are two aligned ``array('q')`` columns sorted oldest first: ``ms`` (creation
time in milliseconds, unique per account) and ``ids``.  Everything else about a video is derived on
demand from its id (:func:`tiktok_sim.population.video_traits`), so a 100k-video account costs
about 1.6 MB.  A video posted after the simulated ``now`` (possible with ``add_videos`` and an
explicit future ``create_time``) stays invisible until the clock reaches it.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import random
from array import array
from dataclasses import dataclass, field

from tiktok_sim.population import Profile, make_profile, make_timeline, new_video_id


def visible_bound_ms(now: float) -> int:
    """Return the exclusive upper ``ms`` bound of videos posted at or before second ``floor(now)``."""
    return (math.floor(now) + 1) * 1000


@dataclass
class Account:
    """One TikTok account and its videos."""

    profile: Profile
    ms: array[int]
    ids: array[int]
    rng: random.Random
    private: dict[int, int] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    #: Text every video of the account carries instead of its generated one ("title",
    #: "description"): creator-controlled text a test chooses, e.g. a Jinja template.
    video_text: dict[str, str] = field(default_factory=dict)

    @property
    def open_id(self) -> str:
        return self.profile.open_id

    def index_of(self, video_id: int) -> int | None:
        """Return the position of ``video_id`` in the columns, or ``None``."""
        second = video_id >> 32
        lo = bisect.bisect_left(self.ms, second * 1000)
        hi = bisect.bisect_left(self.ms, second * 1000 + 1000, lo)
        for position in range(lo, hi):
            if self.ids[position] == video_id:
                return position
        return None

    def is_public(self, position: int) -> bool:
        return self.ids[position] not in self.private

    def public_count(self, now: float) -> int:
        """Return how many public videos are visible at ``now`` (the ``video_count`` field)."""
        bound = visible_bound_ms(now)
        visible = bisect.bisect_left(self.ms, bound)
        return visible - sum(1 for stamp in self.private.values() if stamp < bound)

    def public_positions(self, now: float) -> list[int]:
        """Return the positions of all visible public videos, newest first."""
        visible = bisect.bisect_left(self.ms, visible_bound_ms(now))
        if not self.private:
            return list(range(visible - 1, -1, -1))
        return [p for p in range(visible - 1, -1, -1) if self.ids[p] not in self.private]

    def add_video(self, create_time: int, taken: set[int]) -> int:
        """Post a new public video at ``create_time`` (seconds) and return its id."""
        lo = bisect.bisect_left(self.ms, create_time * 1000)
        hi = bisect.bisect_left(self.ms, create_time * 1000 + 1000, lo)
        if hi - lo >= 1000:
            raise ValueError(f"account {self.open_id} already has 1000 videos in second {create_time}")
        used = set(self.ms[lo:hi])
        stamp = create_time * 1000 + self.rng.randrange(1000)
        while stamp in used:
            stamp = create_time * 1000 + self.rng.randrange(1000)
        video_id = new_video_id(create_time, self.rng, taken)
        position = bisect.bisect_left(self.ms, stamp)
        self.ms.insert(position, stamp)
        self.ids.insert(position, video_id)
        return video_id

    def delete_video(self, video_id: int) -> bool:
        """Delete a video for good; return whether it existed."""
        position = self.index_of(video_id)
        if position is None:
            return False
        del self.ms[position]
        del self.ids[position]
        self.private.pop(video_id, None)
        self.deleted.add(video_id)
        return True

    def set_private(self, video_id: int, private: bool) -> bool:
        """Make a video private (or public again); return whether it exists."""
        position = self.index_of(video_id)
        if position is None:
            return False
        if private:
            self.private[video_id] = self.ms[position]
        else:
            self.private.pop(video_id, None)
        return True


class AccountStore:
    """All accounts of one simulator, created deterministically in order."""

    def __init__(self, seed: int, epoch: float) -> None:
        self.seed = seed
        self.epoch = epoch
        self.accounts: list[Account] = []
        self.by_open_id: dict[str, Account] = {}
        self.taken_ids: set[int] = set()

    def create(
        self,
        videos: int,
        *,
        display_name: str | None = None,
        username: str | None = None,
        video_title: str | None = None,
        video_description: str | None = None,
    ) -> Account:
        """Create the next account (index ``len(accounts)``) with ``videos`` videos.

        The other arguments replace the generated text (of every video, for the ``video_`` ones).
        """
        index = len(self.accounts)
        profile = make_profile(self.seed, index)
        chosen = {"display_name": display_name, "username": username}
        profile = dataclasses.replace(profile, **{k: v for k, v in chosen.items() if v is not None})
        ms, ids = make_timeline(self.seed, index, videos, self.epoch, self.taken_ids)
        video_text = {"title": video_title, "description": video_description}
        account = Account(
            profile=profile,
            ms=ms,
            ids=ids,
            rng=random.Random(f"tiktok-sim:{self.seed}:added:{index}"),
            video_text={k: v for k, v in video_text.items() if v is not None},
        )
        self.accounts.append(account)
        self.by_open_id[account.open_id] = account
        return account

    def get(self, open_id: str) -> Account | None:
        return self.by_open_id.get(open_id)

    def find_video(self, video_id: int) -> tuple[Account, int] | None:
        """Return the owner and position of a live (not deleted) video."""
        for account in self.accounts:
            position = account.index_of(video_id)
            if position is not None:
                return account, position
        return None

    def was_deleted(self, video_id: int) -> Account | None:
        """Return the former owner of a deleted video."""
        for account in self.accounts:
            if video_id in account.deleted:
                return account
        return None
