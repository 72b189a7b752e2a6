"""Name every Display API field, the scope it needs, and render it for one user or video.

Scopes per field follow the facts sheet: the four ``user.info.*``/``video.list`` scopes, every
video field needing ``video.list``.  Only requested fields are rendered: a field not asked for is
absent from the answer, never ``null``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from html import escape
from typing import Any

from tiktok_sim.accounts import Account
from tiktok_sim.population import user_counts, video_counts, video_traits

SCOPES: tuple[str, ...] = ("user.info.basic", "user.info.profile", "user.info.stats", "video.list")
USER_FIELD_SCOPES: dict[str, str] = {
    "open_id": "user.info.basic",
    "union_id": "user.info.basic",
    "avatar_url": "user.info.basic",
    "avatar_url_100": "user.info.basic",
    "avatar_large_url": "user.info.basic",
    "display_name": "user.info.basic",
    "bio_description": "user.info.profile",
    "profile_deep_link": "user.info.profile",
    "is_verified": "user.info.profile",
    "username": "user.info.profile",
    "follower_count": "user.info.stats",
    "following_count": "user.info.stats",
    "likes_count": "user.info.stats",
    "video_count": "user.info.stats",
}
VIDEO_FIELDS: tuple[str, ...] = (
    "id",
    "create_time",
    "cover_image_url",
    "share_url",
    "video_description",
    "duration",
    "height",
    "width",
    "title",
    "embed_html",
    "embed_link",
    "like_count",
    "comment_count",
    "share_count",
    "view_count",
)
VIDEO_FIELD_SCOPES: dict[str, str] = dict.fromkeys(VIDEO_FIELDS, "video.list")
AVATAR_SIZES: dict[str, str] = {"avatar_url": "168", "avatar_url_100": "100", "avatar_large_url": "1080"}

UrlSigner = Callable[[str], str]


def missing_scopes(fields: Iterable[str], table: dict[str, str], granted: frozenset[str]) -> list[str]:
    """Return the scopes ``fields`` need that are not in ``granted``, sorted."""
    return sorted({table[name] for name in fields} - granted)


def render_user(account: Account, fields: list[str], now: float, epoch: float, avatar_url: UrlSigner) -> dict[str, Any]:
    """Return the requested user fields of ``account`` at simulated time ``now``."""
    profile = account.profile
    counts = user_counts(profile, now, epoch)
    values: dict[str, Callable[[], Any]] = {
        "open_id": lambda: profile.open_id,
        "union_id": lambda: profile.union_id,
        "avatar_url": lambda: avatar_url(f"{profile.open_id}_{AVATAR_SIZES['avatar_url']}"),
        "avatar_url_100": lambda: avatar_url(f"{profile.open_id}_{AVATAR_SIZES['avatar_url_100']}"),
        "avatar_large_url": lambda: avatar_url(f"{profile.open_id}_{AVATAR_SIZES['avatar_large_url']}"),
        "display_name": lambda: profile.display_name,
        "bio_description": lambda: profile.bio_description,
        "profile_deep_link": lambda: f"https://vm.tiktok.com/{profile.deep_link_code}/",
        "is_verified": lambda: profile.is_verified,
        "username": lambda: profile.username,
        "follower_count": lambda: counts.follower_count,
        "following_count": lambda: counts.following_count,
        "likes_count": lambda: counts.likes_count,
        "video_count": lambda: account.public_count(now),
    }
    return {name: values[name]() for name in fields}


def render_video(
    seed: int, account: Account, position: int, fields: list[str], now: float, cover_url: UrlSigner
) -> dict[str, Any]:
    """Return the requested fields of the video at ``position`` of ``account``."""
    numeric_id = account.ids[position]
    video_id = str(numeric_id)
    create_time = account.ms[position] // 1000
    traits = video_traits(seed, numeric_id)
    title = account.video_text.get("title", traits.title)
    description = account.video_text.get("description", traits.description)
    share_url = f"https://www.tiktok.com/@{account.profile.username}/video/{video_id}"
    counts = video_counts(traits, create_time, now)
    values: dict[str, Callable[[], Any]] = {
        "id": lambda: video_id,
        "create_time": lambda: create_time,
        "cover_image_url": lambda: cover_url(video_id),
        "share_url": lambda: share_url,
        "video_description": lambda: description,
        "duration": lambda: traits.duration,
        "height": lambda: traits.height,
        "width": lambda: traits.width,
        "title": lambda: title,
        "embed_html": lambda: (
            f'<blockquote class="tiktok-embed" cite="{escape(share_url)}" data-video-id="{escape(video_id)}" '
            f'style="max-width: 605px;min-width: 325px;"><section>'
            f"{escape(description)}</section></blockquote> "
            '<script async src="https://www.tiktok.com/embed.js"></script>'
        ),
        "embed_link": lambda: f"https://www.tiktok.com/player/v1/{video_id}",
        "like_count": lambda: counts.like_count,
        "comment_count": lambda: counts.comment_count,
        "share_count": lambda: counts.share_count,
        "view_count": lambda: counts.view_count,
    }
    return {name: values[name]() for name in fields}
