"""The Display API's fields, the scopes that grant them, and their types."""

from __future__ import annotations

from collections.abc import Collection, Iterable

USER_FIELDS_BY_SCOPE: dict[str, tuple[str, ...]] = {
    "user.info.basic": (
        "open_id",
        "union_id",
        "avatar_url",
        "avatar_url_100",
        "avatar_large_url",
        "display_name",
    ),
    "user.info.profile": ("bio_description", "profile_deep_link", "is_verified", "username"),
    "user.info.stats": ("follower_count", "following_count", "likes_count", "video_count"),
}
USER_FIELDS: tuple[str, ...] = tuple(f for fields in USER_FIELDS_BY_SCOPE.values() for f in fields)

VIDEO_SCOPE = "video.list"
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

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
#: 9999-12-31T23:59:59Z: the last Unix second both Postgres timestamps and Python datetimes hold.
MAX_TIMESTAMP = 253_402_300_799

#: Integer fields and their upper bound (all are non-negative).
INT_BOUNDS: dict[str, int] = {
    "follower_count": INT64_MAX,
    "following_count": INT64_MAX,
    "likes_count": INT64_MAX,
    "video_count": INT64_MAX,
    "create_time": MAX_TIMESTAMP,
    "duration": INT32_MAX,
    "height": INT32_MAX,
    "width": INT32_MAX,
    "like_count": INT64_MAX,
    "comment_count": INT64_MAX,
    "share_count": INT64_MAX,
    "view_count": INT64_MAX,
}
BOOL_FIELDS = frozenset({"is_verified"})

_USER_FIELD_SCOPE = {f: scope for scope, fields in USER_FIELDS_BY_SCOPE.items() for f in fields}


def allowed_user_fields(scopes: Collection[str]) -> tuple[str, ...]:
    """Return every user field the given scopes allow, in the API's documented order."""
    return tuple(f for f in USER_FIELDS if _USER_FIELD_SCOPE[f] in scopes)


def missing_scopes(fields: Iterable[str], scopes: Collection[str], *, kind: str) -> set[str]:
    """Return the scopes that ``fields`` need and ``scopes`` lack; raise ValueError on unknown fields."""
    fields = list(fields)
    if kind == "user":
        unknown = [f for f in fields if f not in _USER_FIELD_SCOPE]
        needed = {_USER_FIELD_SCOPE[f] for f in fields if f in _USER_FIELD_SCOPE}
    else:
        unknown = [f for f in fields if f not in VIDEO_FIELDS]
        needed = {VIDEO_SCOPE}
    if unknown:
        known = USER_FIELDS if kind == "user" else VIDEO_FIELDS
        raise ValueError(f"Unknown {kind} field(s) {sorted(unknown)}; known fields: {', '.join(known)}")
    if not fields:
        raise ValueError(f"At least one {kind} field is required")
    return needed - set(scopes)
