"""Generate the simulator's accounts and videos deterministically from a seed.

Everything here is a pure function of ``(seed, account index)`` or ``(seed, video id)``, so two
simulators started with the same seed serve identical data on any day, and an account's videos
cost only two integer arrays until a page asks for their details.

What the population looks like:

- Account ``i`` has a uuid-like ``open_id`` and ``union_id``, a display name (some with emoji or
  non-Latin script), a unique ``username``, a bio (sometimes empty, often with emoji), and counts.
- At start, account 0 gets ``--videos`` videos and account ``i`` gets ``videos // (i + 1)``;
  accounts created through the admin API get exactly the number asked for.
- Videos are spread uniformly over the four years before ``--epoch`` (default 2026-01-01).
  Every 25th video shares its second with the one before it ("posted together"), so clients meet
  equal ``create_time`` values.  Each video also has a millisecond within its second, unique
  per account, which is what the ``video/list`` cursor is made of (see :mod:`tiktok_sim.pagination`).
- Video ids are 19-digit strings built like TikTok's: ``(create_time << 32) | 32 random bits``,
  unique across the whole simulator.
- Titles and descriptions are at most 150 characters (code points) and mostly carry emoji; about
  one in twenty is exactly 150 characters long, some titles are empty, some descriptions span lines.
- About 3% of videos are "viral": their ``view_count`` ends above 2**31 (it is int64); like,
  comment and share counts stay within int32.
- Counts grow with simulated time: ``views = peak * age / (age + half_life) + trickle * age_days``
  with ``trickle >= 1``, likes/comments/shares fixed fractions of that.  So advancing the clock by a
  day raises every video's ``view_count`` and never lowers any count.  User-level follower, following
  and likes counts grow linearly from the start of the timeline; they are not the sum of the
  videos' counts (summing 100k videos per call would be too slow and the real API does not promise it).
"""

from __future__ import annotations

import functools
import random
import string
import uuid
from array import array
from dataclasses import dataclass

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
DAY = 86400
SPAN_SECONDS = 4 * 365 * DAY
BURST_EVERY = 25
MAX_TEXT = 150

_FIRST_NAMES = (
    "Ana",
    "Kai",
    "Léa",
    "Mateo",
    "Priya",
    "Yuki",
    "Omar",
    "Zoë",
    "Noah",
    "Amara",
    "Jonas",
    "Mei",
    "Sofía",
    "Tariq",
    "Ingrid",
    "Chidi",
)
_LAST_NAMES = ("Müller", "Okafor", "Silva", "Nguyen", "Kowalski", "Haddad", "O'Brien", "Sato", "Ivanova")
_SPECIAL_NAMES = ("佐藤 ゆき", "Дарья", "محمد علي", "김민준", "Ελένη")
_HANDLE_WORDS = ("dance", "cooks", "travels", "codes", "lifts", "paints", "laughs", "sings", "builds")
_BIO_PARTS = (
    "Daily videos",
    "Making data fun",
    "Coffee first",
    "Not a robot (probably)",
    "Business: hello@example.com",
    "Living my best life",
    "New video every Friday",
    "Follow for more",
)
_WORDS = (
    "today",
    "we",
    "try",
    "the",
    "best",
    "pasta",
    "recipe",
    "ever",
    "morning",
    "routine",
    "with",
    "my",
    "dog",
    "tutorial",
    "part",
    "2",
    "wait",
    "for",
    "it",
    "sunset",
    "in",
    "Lisbon",
    "café",
    "naïve",
    "straße",
    "おはよう",
    "добрый",
    "день",
    "مرحبا",
    "it's",
    '"quoted"',
    "50%",
    "off",
    "<3",
    "a\\b",
    "&",
    "POV:",
    "when",
    "Airflow",
    "runs",
    "green",
)
_HASHTAGS = ("#fyp", "#foryou", "#dance", "#recipe", "#travel", "#learnontiktok", "#comedy", "#dataengineering")
_EMOJI = (
    "😀",
    "😂",
    "🔥",
    "💯",
    "✨",
    "🎉",
    "❤️",
    "👍",
    "🙌",
    "🤯",
    "🐶",
    "🍕",
    "🌈",
    "🚀",
    "🎶",
    "😎",
    "🥹",
    "🫶",
    "👩‍💻",
    "🇯🇵",
)
_SIZES = ((1080, 1920), (1080, 1920), (1080, 1920), (720, 1280), (720, 1280), (1080, 1080), (1920, 1080))
_ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Profile:
    """The fixed part of an account; counts come from :func:`user_counts`."""

    index: int
    open_id: str
    union_id: str
    display_name: str
    username: str
    bio_description: str
    is_verified: bool
    deep_link_code: str
    follower_base: int
    follower_per_day: float
    following_base: int
    following_per_day: float
    likes_base: int
    likes_per_day: float


@dataclass(frozen=True)
class VideoTraits:
    """The fixed part of a video; counts come from :func:`video_counts`."""

    title: str
    description: str
    duration: int
    width: int
    height: int
    peak_views: float
    half_life: float
    trickle_per_day: float
    like_ratio: float
    comment_ratio: float
    share_ratio: float


@dataclass(frozen=True)
class VideoCounts:
    view_count: int
    like_count: int
    comment_count: int
    share_count: int


@dataclass(frozen=True)
class UserCounts:
    follower_count: int
    following_count: int
    likes_count: int


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def make_profile(seed: int, index: int) -> Profile:
    """Build account ``index`` of the population seeded with ``seed``."""
    rng = random.Random(f"tiktok-sim:{seed}:account:{index}")
    open_id = _uuid(rng)
    union_id = _uuid(rng)
    if rng.random() < 0.25:
        name = rng.choice(_SPECIAL_NAMES)
    else:
        name = f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"
    if rng.random() < 0.4:
        name = f"{name} {rng.choice(_EMOJI)}"
    handle = f"{rng.choice(_FIRST_NAMES).lower().replace('é', 'e').replace('ë', 'e').replace('í', 'i')}"
    username = f"{handle}.{rng.choice(_HANDLE_WORDS)}_{index}"
    roll = rng.random()
    if roll < 0.1:
        bio = ""
    else:
        parts = rng.sample(_BIO_PARTS, k=rng.randint(1, 3))
        if roll < 0.7:
            parts.insert(rng.randrange(len(parts) + 1), "".join(rng.choices(_EMOJI, k=rng.randint(1, 3))))
        bio = " | ".join(parts)[:80]
    return Profile(
        index=index,
        open_id=open_id,
        union_id=union_id,
        display_name=name,
        username=username,
        bio_description=bio,
        is_verified=rng.random() < 0.25,
        deep_link_code="ZM" + "".join(rng.choices(_ALNUM, k=7)),
        follower_base=int(10 ** rng.uniform(2, 7)),
        follower_per_day=rng.uniform(1, 2000),
        following_base=int(10 ** rng.uniform(1, 3.5)),
        following_per_day=rng.uniform(0, 0.5),
        likes_base=int(10 ** rng.uniform(3, 8)),
        likes_per_day=rng.uniform(10, 20000),
    )


def user_counts(profile: Profile, now: float, epoch: float) -> UserCounts:
    """Return the account's counts at simulated time ``now``: monotonic in ``now``."""
    days = max(0.0, now - (epoch - SPAN_SECONDS)) / DAY
    return UserCounts(
        follower_count=min(INT32_MAX, profile.follower_base + int(profile.follower_per_day * days)),
        following_count=min(INT32_MAX, profile.following_base + int(profile.following_per_day * days)),
        likes_count=min(INT32_MAX, profile.likes_base + int(profile.likes_per_day * days)),
    )


def new_video_id(create_time: int, rng: random.Random, taken: set[int]) -> int:
    """Return an unused id made like TikTok's: the creation second in the high bits.

    :raises ValueError: if ``create_time`` is outside 1977-2043, where such ids have 19 digits.
    """
    if not 10**18 <= create_time << 32 < 10**19 - 2**32:
        raise ValueError(f"create_time {create_time} gives no 19-digit video id")
    while True:
        video_id = (create_time << 32) | rng.getrandbits(32)
        if video_id not in taken:
            taken.add(video_id)
            return video_id


def make_timeline(seed: int, index: int, count: int, epoch: float, taken: set[int]) -> tuple[array[int], array[int]]:
    """Return ``(ms, ids)`` of account ``index``'s ``count`` videos, oldest first.

    ``ms[k]`` is the video's creation time in milliseconds: its ``create_time`` second times
    1000 plus a millisecond unique within the account.  New ids are added to ``taken``.
    """
    rng = random.Random(f"tiktok-sim:{seed}:timeline:{index}")
    end = int(epoch)
    start = end - SPAN_SECONDS
    seconds = sorted(rng.randrange(start, end) for _ in range(count))
    for k in range(BURST_EVERY - 1, count, BURST_EVERY):
        seconds[k] = seconds[k - 1]
    used_ms: set[int] = set()
    stamps: list[int] = []
    for second in seconds:
        stamp = second * 1000 + rng.randrange(1000)
        while stamp in used_ms:
            stamp = second * 1000 + rng.randrange(1000)
        used_ms.add(stamp)
        stamps.append(stamp)
    stamps.sort()
    ids = [new_video_id(stamp // 1000, rng, taken) for stamp in stamps]
    return array("q", stamps), array("q", ids)


def _text(rng: random.Random, *, exact: bool, emoji: bool, newlines: bool) -> str:
    """Return a caption of at most 150 code points (exactly 150 when ``exact``)."""
    target = MAX_TEXT if exact else rng.randint(8, MAX_TEXT)
    pieces: list[str] = []
    length = 0
    while True:
        roll = rng.random()
        if emoji and roll < 0.18:
            piece = rng.choice(_EMOJI)
        elif roll < 0.3:
            piece = rng.choice(_HASHTAGS)
        elif newlines and roll < 0.33:
            piece = "\n"
        else:
            piece = rng.choice(_WORDS)
        extra = len(piece) + (1 if pieces else 0)
        if length + extra > target:
            break
        pieces.append(piece)
        length += extra
    if emoji and not any(piece in _EMOJI for piece in pieces):
        pieces.append(rng.choice(("🔥", "✨", "😂")))
    text = " ".join(pieces)[:MAX_TEXT]
    if exact:
        text = (text + " " + "!" * MAX_TEXT)[:MAX_TEXT]
    return text


@functools.lru_cache(maxsize=8192)
def video_traits(seed: int, video_id: int) -> VideoTraits:
    """Return the fixed attributes of video ``video_id``."""
    rng = random.Random(f"tiktok-sim:{seed}:video:{video_id}")
    with_emoji = rng.random() < 0.85
    title = "" if rng.random() < 0.2 else _text(rng, exact=rng.random() < 0.05, emoji=with_emoji, newlines=False)
    description = _text(rng, exact=rng.random() < 0.05, emoji=with_emoji, newlines=rng.random() < 0.3)
    width, height = rng.choice(_SIZES)
    duration = rng.randint(5, 60) if rng.random() < 0.8 else rng.randint(61, 600)
    viral = rng.random() < 0.03
    peak = rng.uniform(2.2e9, 9.0e9) if viral else 10 ** rng.uniform(1.5, 7.5)
    return VideoTraits(
        title=title,
        description=description,
        duration=duration,
        width=width,
        height=height,
        peak_views=peak,
        half_life=rng.uniform(1, 30) * DAY,
        trickle_per_day=rng.uniform(1, 40),
        like_ratio=rng.uniform(0.01, 0.2),
        comment_ratio=rng.uniform(0.002, 0.05),
        share_ratio=rng.uniform(0.001, 0.08),
    )


def video_counts(traits: VideoTraits, create_time: int, now: float) -> VideoCounts:
    """Return the video's counts at simulated time ``now``: monotonic in ``now``."""
    age = max(0.0, now - create_time)
    views = int(traits.peak_views * age / (age + traits.half_life) + traits.trickle_per_day * age / DAY)
    views = min(INT64_MAX, views)
    likes = min(INT32_MAX, int(views * traits.like_ratio))
    return VideoCounts(
        view_count=views,
        like_count=likes,
        comment_count=min(INT32_MAX, int(likes * traits.comment_ratio)),
        share_count=min(INT32_MAX, int(likes * traits.share_ratio)),
    )
