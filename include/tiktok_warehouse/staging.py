"""
Turn API video objects into clean, typed columns, and COPY columns into Postgres.

The input side of every video load: deduplicate by id, sort by id, group by the fields each
object carries (a field not requested is absent, and an absent field must keep its stored value),
and clean the values so Postgres accepts them: text without NUL characters or unpaired
surrogates, integers within their column's range, the cover URL's ``x-expires`` as Unix seconds.

The work is done a column at a time with C-level loops (``map`` over a column, no Python call per
value unless a value needs fixing), because the bulk path feeds 100k-video batches through it.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import filterfalse, repeat
from operator import contains, itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Text

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy.engine import Connection

TEXT_FIELDS = ("title", "video_description", "share_url", "embed_link", "embed_html", "cover_image_url")
INT32_FIELDS = ("duration", "height", "width")
COUNT_FIELDS = ("like_count", "comment_count", "share_count", "view_count")
#: The video object's fields the warehouse stores, besides ``id``.
VIDEO_FIELDS = ("create_time", *TEXT_FIELDS, *INT32_FIELDS, *COUNT_FIELDS)

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z, the last second Postgres and Python share
# An x-expires beyond this many seconds (year 5138) is taken to be milliseconds: its unit is not
# documented, and either reading should give a sensible time.
_MAX_UNIX_SECONDS = 10**11

#: Staging columns: the API's raw types, times as Unix seconds, plus the parsed cover expiry.
STAGE_TYPES: dict[str, Any] = {
    "id": Text,
    "create_time": BigInteger,
    **dict.fromkeys(TEXT_FIELDS, Text),
    "cover_expires": BigInteger,
    **dict.fromkeys(INT32_FIELDS, BigInteger),
    **dict.fromkeys(COUNT_FIELDS, BigInteger),
}

_BOUNDS = {
    "create_time": (0, MAX_TIMESTAMP),
    **dict.fromkeys(INT32_FIELDS, (-INT32_MAX - 1, INT32_MAX)),
    **dict.fromkeys(COUNT_FIELDS, (-INT64_MAX - 1, INT64_MAX)),
}
_X_EXPIRES = re.compile(r"[?&]x-expires=([0-9]{1,16})(?=[&#]|$)", re.IGNORECASE)
_SURROGATE = re.compile("[\ud800-\udfff]")
_COPY_SPECIAL_BYTES = (b"\\", b"\t", b"\n", b"\r")
_NONE = type(None)


def clean_text(value: Any) -> str | None:
    """Return ``value`` as text Postgres accepts: no NUL characters, no unpaired surrogates."""
    if value is None:
        return None
    text = value if type(value) is str else str(value)
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii() and _SURROGATE.search(text):
        # Rejoin surrogate pairs that arrived split, replace the ones that cannot be paired.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def clean_int(value: Any, field: str, owner: str, low: int, high: int) -> int | None:
    """Return ``value`` as an int within ``low..high``; a clear ValueError naming ``owner`` otherwise."""
    if value is None:
        return None
    if type(value) is not int:
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            value = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{owner}: {field} is not an integer: {value!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{owner}: {field} {value} is out of range for its column ({low}..{high})")
    return value


def cover_expires_unix(url: str | None) -> int | None:
    """Return the ``x-expires`` of a signed cover URL as Unix seconds, or None if absent or garbled."""
    if not url:
        return None
    match = _X_EXPIRES.search(url)
    if match is None:
        return None
    value = int(match.group(1))
    if value > _MAX_UNIX_SECONDS:
        value //= 1000
    return value if 0 < value <= MAX_TIMESTAMP else None


def cover_expires_at(url: str | None) -> datetime | None:
    """Return when a signed cover URL expires, from its ``x-expires`` parameter; None if unknown."""
    value = cover_expires_unix(url)
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _contains_any(texts: list[str], chars: Sequence[str]) -> bool:
    """Whether any of ``texts`` contains any of ``chars`` (C-level loops: no Python call per value)."""
    return any(any(map(contains, texts, repeat(char))) for char in chars)


def _clean_text_column(values: list[Any]) -> list[Any]:
    types = set(map(type, values))
    if types <= {str, _NONE}:
        texts = values if _NONE not in types else [v for v in values if v is not None]
        if not _contains_any(texts, ("\x00",)):
            try:
                # Unpaired surrogates (a JSON "\\ud83d" escape whose pair was cut off) cannot be encoded.
                "".join(filterfalse(str.isascii, texts)).encode()
            except UnicodeEncodeError:
                pass
            else:
                return values
    return [clean_text(v) for v in values]


def _clean_int_column(values: list[Any], field: str, ids: list[str]) -> list[Any]:
    low, high = _BOUNDS[field]
    types = set(map(type, values))
    if types <= {int, _NONE}:
        ints = values if _NONE not in types else [v for v in values if v is not None]
        if not ints or (low <= min(ints) and max(ints) <= high):
            return values
    return [clean_int(v, field, f"Video {i}", low, high) for v, i in zip(values, ids, strict=True)]


def _clean_id(value: Any) -> str:
    video_id = clean_text(value)
    if not video_id:
        raise ValueError(f"A video object has no id (id={value!r})")
    return video_id


@dataclass
class VideoGroup:
    """Videos that carry the same fields, as clean columns in id order."""

    #: The API fields these videos carry besides ``id``, in ``VIDEO_FIELDS`` order.
    fields: tuple[str, ...]
    #: Staging column name -> values: ``id``, each field carried, and ``cover_expires`` with the cover.
    columns: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.columns["id"])

    def rows(self) -> list[dict[str, Any]]:
        """Return the group as one dict per video (staging column names)."""
        names = list(self.columns)
        return [dict(zip(names, values, strict=True)) for values in zip(*self.columns.values(), strict=True)]


def prepare_videos(videos: Sequence[Mapping[str, Any]], *, clean_texts: bool = True) -> list[VideoGroup]:
    """
    Deduplicate ``videos`` by id (the last one wins), sort by id, group by fields carried, clean.

    :param clean_texts: strip NUL characters and unpaired surrogates from text values. The COPY
        path passes False: ``copy_data`` does the same to the rendered batch at a fraction of the
        cost (one scan of the encoded bytes instead of one per value).
    """
    ids = [video.get("id") for video in videos]
    if set(map(type, ids)) != {str} or "" in ids or _contains_any(ids, ("\x00",)):
        ids = [_clean_id(i) for i in ids]
    last = {video_id: index for index, video_id in enumerate(ids)}
    ordered_ids = sorted(last)
    ordered = list(map(videos.__getitem__, map(last.__getitem__, ordered_ids)))
    key_sets = set(map(frozenset, ordered))
    grouped: dict[tuple[str, ...], tuple[list[str], list[Mapping[str, Any]]]] = {}
    if len(key_sets) == 1:  # the usual case: every video carries the fields that were requested
        grouped[_fields(next(iter(key_sets)))] = (ordered_ids, ordered)
    else:
        fields_of = {keys: _fields(keys) for keys in key_sets}
        for video_id, video in zip(ordered_ids, ordered, strict=True):
            group_ids, group_videos = grouped.setdefault(fields_of[frozenset(video)], ([], []))
            group_ids.append(video_id)
            group_videos.append(video)
    groups = []
    for fields, (group_ids, group_videos) in grouped.items():
        columns: dict[str, list[Any]] = {"id": group_ids}
        for field in fields:
            values = list(map(itemgetter(field), group_videos))
            if field in _BOUNDS:
                columns[field] = _clean_int_column(values, field, group_ids)
            elif clean_texts:
                columns[field] = _clean_text_column(values)
            else:
                columns[field] = values
        if "cover_image_url" in columns:
            columns["cover_expires"] = list(map(cover_expires_unix, columns["cover_image_url"]))
        groups.append(VideoGroup(fields, columns))
    return groups


def _fields(keys: frozenset[str]) -> tuple[str, ...]:
    return tuple(field for field in VIDEO_FIELDS if field in keys)


def _encode(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:  # an unpaired surrogate
        return (clean_text(text) or "").encode()


def _escape(value: bytes) -> bytes:
    return value.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")


def _render_column(values: Sequence[Any]) -> list[bytes]:
    """Render one column for COPY's text format, as UTF-8 bytes (escaped, NULL as ``\\N``)."""
    types = set(map(type, values))
    if types <= {int, _NONE}:
        if _NONE in types:
            return [b"\\N" if v is None else b"%d" % v for v in values]
        return list(map(str.encode, map(str, values)))
    if not types <= {str, _NONE}:
        raise TypeError(f"COPY columns hold str, int or None; got {sorted(t.__name__ for t in types)}")
    texts = values if _NONE not in types else [v for v in values if v is not None]
    try:
        # Bytes, not str: a row joined as str would widen to 4 bytes a character for one emoji.
        encoded = list(map(str.encode, texts))
    except UnicodeEncodeError:
        encoded = list(map(_encode, texts))
    joined = b"".join(encoded)
    if any(char in joined for char in _COPY_SPECIAL_BYTES):
        encoded = list(map(_escape, encoded))
    if _NONE not in types:
        return encoded
    rest = iter(encoded)
    return [b"\\N" if v is None else next(rest) for v in values]


def copy_data(columns: Sequence[Sequence[Any]]) -> bytes:
    """Render columns of str, int and None as UTF-8 in COPY's text format, without NUL characters."""
    rendered = [_render_column(values) for values in columns]
    if not rendered or not rendered[0]:
        return b""
    data = b"\n".join(map(b"\t".join, zip(*rendered, strict=True))) + b"\n"
    # Postgres text cannot hold NUL. In UTF-8 a 0x00 byte is only ever the NUL character itself, so
    # dropping the bytes is exactly clean_text() on every value, in one C-level pass.
    return data.replace(b"\x00", b"") if b"\x00" in data else data


def copy_from(conn: Connection, table: str, column_names: Sequence[str], data: bytes) -> None:
    """COPY ``data`` (UTF-8, text format) into ``table`` with the engine's driver (psycopg2 or psycopg 3)."""
    sql = f"COPY {table} ({', '.join(column_names)}) FROM STDIN"
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if hasattr(cursor, "copy_expert"):  # psycopg2
            cursor.copy_expert(sql, io.BytesIO(data), size=1 << 20)
        else:  # psycopg 3
            with cursor.copy(sql) as copy:
                copy.write(data)
    finally:
        cursor.close()
