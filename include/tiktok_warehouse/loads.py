"""
Idempotent, batched writes of TikTok API data into the warehouse.

Rules every load follows:

* Upserts are keyed on natural keys (video id, open_id + UTC date, ...), and a row whose values
  did not change is not rewritten (``ON CONFLICT ... DO UPDATE ... WHERE (stored) IS DISTINCT FROM
  (new)``), so a retried task creates no dead tuples and no WAL.
* A key absent from an API object (field not requested) keeps the stored value; only keys that
  are present are written. Rows are grouped by the set of keys they carry, one statement a group.
* ``last_seen_at`` rule: a video row is rewritten (and ``last_seen_at`` set to the capture time)
  when a value changed, when it comes back after being marked removed, or when the stored
  ``last_seen_at`` is on an earlier UTC day than the capture. So the first sync of a UTC day
  touches every row it sees, and same-day re-runs with unchanged data are true no-ops:
  ``last_seen_at`` is exact to the UTC day, and exact to the moment for rows that changed.
* Out-of-order writes lose: data captured before the stored ``last_seen_at`` (say, a slow
  backfill page committed after a newer sync) never overwrites newer values.
* Batches are deduplicated by id (the last occurrence wins) and written in id order, so
  concurrent writers take row locks in the same order and cannot deadlock each other. Rows are
  staged already sorted (in Python) and read back with a plain scan, which returns them in the
  order they were staged; an ORDER BY would re-sort a 100 MB batch on disk for nothing.
* Small batches (a few API pages) travel as one JSON parameter and are written by one statement
  (the videos, their snapshots and the sync's seen ids as data-modifying CTEs over the parsed JSON);
  large ones are COPYed into a temporary staging table and merged ``COPY_CHUNK`` videos at a
  time, the next part cleaned and rendered in a background thread meanwhile, so the Python work
  overlaps the database's. A large batch none of whose videos is stored (a first load) skips the
  staging: its rows are COPYed straight into ``videos`` and ``video_snapshots``, each part under a
  savepoint, and a part that meets a video stored meanwhile is rolled back and merged instead.
  Either way a batch is a few statements (per part), never one per row, and each statement is
  built once per shape and cached.
* Text loses NUL characters (Postgres text cannot hold them) and unpaired surrogates, and integers
  must be within the provider's bounds: one sanitiser, :mod:`tiktok_provider.sanitize`.
* The page batch (cleaned columns, JSON or COPY) is built here, beside the SQL it feeds.
* Nothing is marked removed on the strength of one run. A sync's listing only names removal
  *suspects* (stored with its checkpoint); ``video/query`` returns a live one (updated, never
  marked) or leaves it out. The first time a video is left out only ``videos.missing_since`` is
  set (a *pending* removal); any listing or query that returns the video clears it. A video is
  marked removed only when a later run, at least the policy's ``confirm_after`` after that first
  miss, finds it missing again -- so a short outage in which video/query answers "no videos"
  (or an account made private for a while) removes nothing.
* Share guard: one run never marks more than the policy's share of an account's live
  videos (see ``tiktok_pipeline.removals``): it marks none, logs a warning, and reports them as
  ``removals_held``; they stay pending and a later run judges them again.

Result types are small frozen dataclasses of JSON types, so ``dataclasses.asdict`` gives an
XCom-ready summary.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from itertools import filterfalse, repeat
from operator import contains, itemgetter
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    column,
    exists,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    table,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tiktok_provider.fields import VIDEO_FIELDS as API_VIDEO_FIELDS
from tiktok_provider.sanitize import INT_BOUNDS, MAX_TIMESTAMP, clean_int, clean_text, int_bounds
from tiktok_warehouse.history import DEFAULT_YOUNG_DAYS, record_captures
from tiktok_warehouse.tables import (
    SYNC_MODES,
    accounts,
    profile_snapshots,
    sync_seen_videos,
    sync_state,
    video_snapshots,
)
from tiktok_warehouse.tables import videos as videos_table
from tiktok_warehouse.tokens import AccountNotFound

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from sqlalchemy.engine import Connection, Engine, Row
    from sqlalchemy.sql import Executable, FromClause

log = logging.getLogger(__name__)

# Batches up to this many videos travel as one JSON parameter; larger ones go through COPY.
JSON_BATCH_LIMIT = 1000


class RemovalRules(Protocol):
    """What the removal SQL needs from the caller's removal policy (``tiktok_pipeline.removals.POLICY``).

    The warehouse runs the queries and the updates; the policy decides: how long a second look
    waits, how far back removals are rechecked, and whether one run's removals are too many.
    """

    #: A video is marked removed only when it is left out again at least this long after it first was.
    confirm_after: timedelta
    #: The cover refresh asks again about videos marked removed this recently.
    recheck: timedelta

    def holds(self, confirmed: int, live: int) -> bool:
        """Whether ``confirmed`` removals of an account with ``live`` live videos are held, not marked."""
        ...

    def hold_rule(self) -> str:
        """The share guard in words, for the warning a hold logs."""
        ...


#: The user object's fields kept on ``accounts`` and in ``profile_snapshots``.
ACCOUNT_PROFILE_FIELDS = ("display_name", "username", "avatar_url")
PROFILE_SNAPSHOT_FIELDS = (
    "follower_count",
    "following_count",
    "likes_count",
    "video_count",
    "display_name",
    "bio_description",
    "avatar_url",
    "is_verified",
)
_PROFILE_COUNT_FIELDS = frozenset(("follower_count", "following_count", "likes_count", "video_count"))

# -- the page batch: clean columns, and COPY ------------------------------------------------------
# The input side of every video load: deduplicate by id, sort by id, group by the fields each
# object carries (a field not requested is absent, and an absent field must keep its stored value),
# and clean the values with the provider's one sanitiser (tiktok_provider.sanitize) so Postgres
# accepts them; the cover URL's ``x-expires`` becomes Unix seconds. The work is done a column at a
# time with C-level loops (``map`` over a column, no Python call per value unless a value needs
# fixing), because the bulk path feeds 100k-video batches through it.

#: The video object's fields the warehouse stores, besides ``id`` (the provider's list, its order).
VIDEO_FIELDS = tuple(name for name in API_VIDEO_FIELDS if name != "id")
#: The counts a video snapshot keeps.
COUNT_FIELDS = tuple(name for name in VIDEO_FIELDS if name.endswith("_count"))
#: Staging columns: the API's raw types, times as Unix seconds, plus the parsed cover expiry.
STAGE_TYPES: dict[str, Any] = {
    "id": Text,
    **{name: BigInteger if name in INT_BOUNDS else Text for name in VIDEO_FIELDS},
    "cover_expires": BigInteger,
}

# An x-expires beyond this many seconds (year 5138) is taken to be milliseconds: its unit is not
# documented, and either reading should give a sensible time.
_MAX_UNIX_SECONDS = 10**11

_X_EXPIRES = re.compile(r"[?&]x-expires=([0-9]{1,16})(?=[&#]|$)", re.IGNORECASE)
_COPY_SPECIAL_BYTES = (b"\\", b"\t", b"\n", b"\r")
_NONE = type(None)


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
    low, high = int_bounds(field)
    types = set(map(type, values))
    if types <= {int, _NONE}:
        ints = values if _NONE not in types else [v for v in values if v is not None]
        if not ints or (low <= min(ints) and max(ints) <= high):
            return values
    return [clean_int(v, field, f"Video {i}") for v, i in zip(values, ids, strict=True)]


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
    return [group_columns(*group, clean_texts=clean_texts) for group in order_videos(videos)]


def order_videos(
    videos: Sequence[Mapping[str, Any]],
) -> list[tuple[tuple[str, ...], list[str], list[Mapping[str, Any]]]]:
    """Deduplicate ``videos`` by id (the last one wins), sort by id, group by fields carried.

    :return: per group, (the fields carried, the ids, the videos), in id order.
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
    return [(fields, group_ids, group_videos) for fields, (group_ids, group_videos) in grouped.items()]


def stage_columns(fields: tuple[str, ...]) -> tuple[str, ...]:
    """The staging columns of a group carrying ``fields``: ``id``, the fields, ``cover_expires`` with the cover."""
    return ("id", *fields, *(("cover_expires",) if "cover_image_url" in fields else ()))


def group_columns(
    fields: tuple[str, ...], ids: list[str], videos: Sequence[Mapping[str, Any]], *, clean_texts: bool = True
) -> VideoGroup:
    """The clean columns of videos (in id order) that all carry ``fields`` (see :func:`prepare_videos`)."""
    columns: dict[str, list[Any]] = {"id": ids}
    for name in fields:
        values = list(map(itemgetter(name), videos))
        if name in INT_BOUNDS:
            columns[name] = _clean_int_column(values, name, ids)
        elif clean_texts:
            columns[name] = _clean_text_column(values)
        elif set(map(type, values)) <= {str, _NONE}:
            columns[name] = values
        else:  # a number or a boolean where text belongs: stored as its text, as the JSON path does
            columns[name] = [clean_text(v) for v in values]
    if "cover_image_url" in columns:
        columns["cover_expires"] = list(map(cover_expires_unix, columns["cover_image_url"]))
    return VideoGroup(fields, columns)


def _fields(keys: frozenset[str]) -> tuple[str, ...]:
    return tuple(name for name in VIDEO_FIELDS if name in keys)


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
            # One read of the whole buffer: each read takes the GIL back from a thread rendering the next part.
            cursor.copy_expert(sql, io.BytesIO(data), size=max(len(data), 1 << 16))
        else:  # psycopg 3
            with cursor.copy(sql) as copy:
                copy.write(data)
    finally:
        cursor.close()


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncState:
    """The checkpoint of one sync run of one account (times as ISO 8601 UTC strings)."""

    sync_id: int
    open_id: str
    mode: str
    #: The video/list cursor (Unix ms) to request next; None = start from the newest video.
    cursor: int | None
    window_start: str | None
    started_at: str
    pages: int
    videos_seen: int
    #: True when begin_sync picked up an unfinished sync instead of starting one.
    resumed: bool
    #: Videos met without a usable id, over every try of the sync (none are marked removed while > 0).
    unidentified: int = 0
    #: When the listing ended and its removal suspects were stored; None while listing.
    listed_at: str | None = None
    #: How many removal suspects the listing left (None while listing).
    removal_suspects: int | None = None

    @property
    def window_start_dt(self) -> datetime | None:
        """``window_start`` as a datetime."""
        return datetime.fromisoformat(self.window_start) if self.window_start else None

    @property
    def started_at_dt(self) -> datetime:
        """``started_at`` as a datetime."""
        return datetime.fromisoformat(self.started_at)


@dataclass(frozen=True)
class LoadResult:
    """What a video upsert did: rows inserted, rewritten, left untouched; snapshot rows written."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    snapshots_written: int = 0


@dataclass(frozen=True)
class ListedPage:
    """One video/list page as the warehouse loads it."""

    videos: Sequence[Mapping[str, Any]]
    #: The cursor the API returned with the page (the next one to request); None keeps the stored one.
    cursor: int | None = None
    #: Videos of the page that came without a usable id (not in ``videos``).
    unidentified: int = 0


@dataclass(frozen=True)
class PageResult:
    """What loading video/list pages did, and the checkpoint after them."""

    inserted: int
    updated: int
    unchanged: int
    snapshots_written: int
    #: Videos this sync had not seen on an earlier page (pages may overlap at their boundary).
    new_in_sync: int
    sync: SyncState
    #: Captures of young videos kept (``tiktok.video_captures``).
    captures: int = 0


@dataclass(frozen=True)
class FinishResult:
    """What finishing a sync did."""

    sync_id: int
    open_id: str
    mode: str
    pages: int
    videos_seen: int
    #: Videos marked removed: suspects video/query left out in this run and in an earlier one.
    removed: int
    #: Live videos the listing should have met but did not (0 if it met unidentifiable videos).
    removal_suspects: int = 0
    #: Suspects video/query returned: live, updated, not marked.
    suspects_live: int = 0
    #: Suspects nobody confirmed either way (not marked); the next sync judges them again.
    suspects_unconfirmed: int = 0
    #: Suspects video/query left out for the first time (or too recently): a later run judges them.
    removals_pending: int = 0
    #: Confirmed removals not marked by the share guard (a later run judges them again).
    removals_held: int = 0
    #: Videos met without a usable id, over every try.
    unidentified: int = 0


@dataclass(frozen=True)
class ConfirmResult:
    """What one video/query answer about a sync's removal suspects did."""

    #: Suspects among the ids asked about.
    suspects: int
    #: Of those, returned by video/query: live, updated (and their snapshots written).
    live: int
    #: Of those, left out by video/query: judged when the sync finishes (see finish_sync).
    missing: int
    updated: int
    snapshots_written: int
    #: Captures of young videos kept (``tiktok.video_captures``).
    captures: int = 0


@dataclass(frozen=True)
class QueryResult:
    """What applying a video/query answer did."""

    requested: int
    returned: int
    inserted: int
    updated: int
    unchanged: int
    snapshots_written: int
    #: Returned videos that had been marked removed: restored.
    restored: int = 0
    #: Requested ids the answer left out, in id order.
    missing: list[str] = field(default_factory=list)
    #: Of those, live videos left out for the first time: now pending (``missing_since`` set).
    pending: int = 0
    #: Of those, live videos pending since at least ``confirm_after`` before this answer: the
    #: caller marks them with :meth:`Warehouse.mark_removals` once it has every answer of its run.
    confirmed: list[str] = field(default_factory=list)
    #: Captures of young videos kept (``tiktok.video_captures``).
    captures: int = 0


@dataclass(frozen=True)
class RemovalResult:
    """What judging one run's confirmed removals of an account did."""

    #: Videos marked removed.
    removed: int
    #: Confirmed removals the share guard held back (not marked; still pending).
    held: int


class SyncNotActive(RuntimeError):
    """The sync was finished (by another run) or does not exist; its checkpoint cannot advance."""


# -- helpers ------------------------------------------------------------------------------------


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (got naive {value.isoformat()})")
    return value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


# -- the upsert path ----------------------------------------------------------------------------


def _rowcount(conn: Connection, stmt: Executable, params: dict[str, Any] | None = None) -> int:
    """Execute ``stmt``; return the rows it wrote (kept for INSERTs too, whatever the driver)."""
    return conn.execute(stmt, params or {}, execution_options={"preserve_rowcount": True}).rowcount


def _stage_expr(src: FromClause, name: str) -> Any:
    if name == "create_time":
        return func.to_timestamp(src.c.create_time)
    if name == "cover_expires_at":
        return func.to_timestamp(src.c.cover_expires)
    return src.c[name]


# The statements of a load are built once per shape (the fields a group carries, JSON or COPY) and
# cached; every value travels as a bind parameter. Building them is most of a small load's Python.
_OPEN_ID = bindparam("open_id", type_=Text)
_CAPTURED_AT = bindparam("captured_at", type_=DateTime(timezone=True))
_DAY_START = bindparam("day_start", type_=DateTime(timezone=True))
_SNAPSHOT_DATE = bindparam("snapshot_date", type_=Date)
_SYNC_ID = bindparam("sync", type_=BigInteger)


def _video_target_columns(present: tuple[str, ...]) -> list[str]:
    names = [name for name in VIDEO_FIELDS if name in present]
    if "cover_image_url" in present:
        names.insert(names.index("cover_image_url") + 1, "cover_expires_at")
    return names


def _video_upsert(src: FromClause, present: tuple[str, ...]) -> Any:
    """INSERT ... ON CONFLICT of one staged group into ``videos``, returning whether each row was inserted.

    Binds ``open_id``, ``captured_at`` and ``day_start`` (midnight UTC of the capture's day).
    """
    names = _video_target_columns(present)
    selected = select(src.c.id, _OPEN_ID, *(_stage_expr(src, name) for name in names), _CAPTURED_AT, _CAPTURED_AT)
    stmt = pg_insert(videos_table).from_select(["id", "open_id", *names, "first_seen_at", "last_seen_at"], selected)
    new = stmt.excluded
    changed = [
        videos_table.c.removed_at.is_not(None),
        videos_table.c.missing_since.is_not(None),
        videos_table.c.last_seen_at < _DAY_START,
    ]
    if names:
        changed.append(tuple_(*(videos_table.c[n] for n in names)).is_distinct_from(tuple_(*(new[n] for n in names))))
    return stmt.on_conflict_do_update(
        index_elements=[videos_table.c.id],
        set_={
            **{name: new[name] for name in names},
            "last_seen_at": func.greatest(videos_table.c.last_seen_at, new.last_seen_at),
            "removed_at": null(),
            "missing_since": null(),
        },
        # A video never moves between accounts, and older data never overwrites newer data.
        where=and_(
            or_(*changed),
            videos_table.c.open_id == new.open_id,
            videos_table.c.last_seen_at <= new.last_seen_at,
        ),
    ).returning(literal_column("xmax = 0").label("inserted"))


def _snapshot_upsert(src: FromClause, present: tuple[str, ...]) -> Any:
    """INSERT ... ON CONFLICT of today's engagement snapshots of one staged group; None without counts.

    Binds ``snapshot_date`` and ``captured_at``.
    """
    counts = [name for name in COUNT_FIELDS if name in present]
    if not counts:
        return None
    selected = select(src.c.id, _SNAPSHOT_DATE, *(src.c[name] for name in counts), _CAPTURED_AT)
    stmt = pg_insert(video_snapshots).from_select(["video_id", "snapshot_date", *counts, "captured_at"], selected)
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[video_snapshots.c.video_id, video_snapshots.c.snapshot_date],
        set_={**{name: new[name] for name in counts}, "captured_at": new.captured_at},
        where=and_(
            tuple_(*(video_snapshots.c[n] for n in counts)).is_distinct_from(tuple_(*(new[n] for n in counts))),
            video_snapshots.c.captured_at <= new.captured_at,
        ),
    )


def _seen_insert(src: FromClause) -> Any:
    """Remember the staged ids as seen by the sync (bind ``sync``); returns the ids it had not seen before."""
    return (
        pg_insert(sync_seen_videos)
        .from_select(["sync_id", "video_id"], select(_SYNC_ID, src.c.id))
        .on_conflict_do_nothing(index_elements=[sync_seen_videos.c.sync_id, sync_seen_videos.c.video_id])
        .returning(sync_seen_videos.c.video_id)
    )


def _counted(cte: Any, label: str) -> Any:
    return select(func.count()).select_from(cte).scalar_subquery().label(label)


@lru_cache(maxsize=64)
def _json_load_statement(columns: tuple[str, ...], present: tuple[str, ...], seen: bool) -> Any:
    """One statement for a group of videos sent as JSON: the videos, their snapshots, the sync's seen ids.

    The JSON (bind ``videos``) is parsed once into a materialised CTE that each write reads. Returns
    one row: ``inserted``, ``written`` (videos inserted or rewritten), ``snapshots``, ``new_in_sync``.
    """
    records = (
        func.jsonb_to_recordset(cast(bindparam("videos", type_=Text), JSONB))
        .table_valued(*(column(name, STAGE_TYPES[name]) for name in columns))
        .render_derived(name="records", with_types=True)
    )
    src = select(records).cte("src").prefix_with("MATERIALIZED")
    merged = _video_upsert(src, present).cte("merged")
    counts = [func.count().filter(merged.c.inserted).label("inserted"), func.count().label("written")]
    snapshots = _snapshot_upsert(src, present)
    if snapshots is not None:
        counts.append(_counted(snapshots.returning(video_snapshots.c.video_id).cte("snapshots"), "snapshots"))
    if seen:
        counts.append(_counted(_seen_insert(src).cte("seen"), "new_in_sync"))
    return select(*counts).select_from(merged)


@lru_cache(maxsize=64)
def _copy_load_statements(stage: str, columns: tuple[str, ...], present: tuple[str, ...]) -> tuple[Any, Any, Any]:
    """The statements for a group COPYed into the temporary table ``stage``: videos, snapshots (or None), seen ids.

    Apart, not in one statement: each reads the (large) stage once, as a plain scan in the order it
    was staged.
    """
    src = table(stage, *(column(name, STAGE_TYPES[name]) for name in columns))
    merged = _video_upsert(src, present).cte("merged")
    videos = select(func.count().filter(merged.c.inserted).label("inserted"), func.count().label("written"))
    return videos.select_from(merged), _snapshot_upsert(src, present), _seen_insert(src)


@dataclass
class _Tally:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    snapshots_written: int = 0
    new_in_sync: int = 0

    def load_result(self) -> LoadResult:
        return LoadResult(self.inserted, self.updated, self.unchanged, self.snapshots_written)


#: A large batch is COPYed and merged this many videos at a time, while the next part is rendered
#: for COPY in a background thread: the Python work overlaps the database's.
COPY_CHUNK = 10_000


def _create_stage(conn: Connection, columns: tuple[str, ...], number: int) -> str:
    """Create the temporary table a group is COPYed into (dropped at commit); return its name."""
    stage = Table(
        f"tiktok_video_stage_{number}",
        MetaData(),
        *(Column(name, STAGE_TYPES[name]) for name in columns),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )
    stage.create(conn)
    return stage.name


#: Whether any of the ids (bind ``ids``: joined by commas) is stored: none, and a batch can be COPYed
#: straight in. One text parameter, not an array of 100k: a fraction of the cost to send and parse.
#: An id holding a comma only makes the answer wrong in the safe direction or costs a savepoint.
_ANY_STORED = select(exists().where(videos_table.c.id == any_(func.string_to_array(bindparam("ids", type_=Text), ","))))
_UNIQUE_VIOLATION = "23505"


def _timestamps(values: Sequence[int | None]) -> list[str | None]:
    """Unix seconds as timestamptz input, exactly what ``to_timestamp`` makes of them."""
    seen: dict[int, str] = {}
    out: list[str | None] = []
    for value in values:
        if value is None:
            out.append(None)
        elif value in seen:
            out.append(seen[value])
        else:
            out.append(seen.setdefault(value, datetime.fromtimestamp(value, UTC).isoformat()))
    return out


def _direct_rows(part: VideoGroup, params: dict[str, Any]) -> tuple[list[str], bytes, list[str], bytes | None]:
    """A group of videos none of which is stored, rendered for COPY straight into ``videos`` and ``video_snapshots``.

    The very rows the INSERT of the merge would write for them (``first_seen_at`` = ``last_seen_at``
    = the capture time, the cover's expiry parsed, the create time converted as ``to_timestamp``).
    """
    n = len(part)
    captured = params["captured_at"].isoformat()
    names = _video_target_columns(part.fields)
    values: list[Sequence[Any]] = [part.columns["id"], [params["open_id"]] * n]
    for name in names:
        if name == "create_time":
            values.append(_timestamps(part.columns["create_time"]))
        elif name == "cover_expires_at":
            values.append(_timestamps(part.columns["cover_expires"]))
        else:
            values.append(part.columns[name])
    values += [[captured] * n, [captured] * n]
    video_columns = ["id", "open_id", *names, "first_seen_at", "last_seen_at"]
    counts = [name for name in COUNT_FIELDS if name in part.fields]
    if not counts:
        return video_columns, copy_data(values), [], None
    snapshot_values = [
        part.columns["id"],
        [params["snapshot_date"].isoformat()] * n,
        *(part.columns[name] for name in counts),
        [captured] * n,
    ]
    return (
        video_columns,
        copy_data(values),
        ["video_id", "snapshot_date", *counts, "captured_at"],
        copy_data(snapshot_values),
    )


def _copy_straight_in(conn: Connection, rows: tuple[list[str], bytes, list[str], bytes | None]) -> bool:
    """COPY rendered rows into ``videos`` (and ``video_snapshots``) under a savepoint.

    :return: False (the savepoint rolled back) when one of the videos was stored meanwhile.
    """
    video_columns, videos, snapshot_columns, snapshots = rows
    try:
        with conn.begin_nested():
            copy_from(conn, "tiktok.videos", video_columns, videos)
            if snapshots is not None:
                copy_from(conn, "tiktok.video_snapshots", snapshot_columns, snapshots)
    except Exception as exc:
        # Raised by the driver itself (COPY goes around SQLAlchemy): psycopg 3 and psycopg2 spell it apart.
        if getattr(exc, "sqlstate", None) == _UNIQUE_VIOLATION or getattr(exc, "pgcode", None) == _UNIQUE_VIOLATION:
            return False
        raise
    return True


def _load_copied(
    conn: Connection,
    group: tuple[tuple[str, ...], list[str], list[Mapping[str, Any]]],
    number: int,
    params: dict[str, Any],
    sync_id: int | None,
    tally: _Tally,
) -> tuple[int, int]:
    """Load a large group ``COPY_CHUNK`` videos at a time; return (inserted, written).

    While one part is written (the connection waits on the server, the GIL free), the next is
    cleaned and rendered in a background thread. When none of the group's videos is stored (a
    first load), the parts are COPYed straight into ``videos`` and ``video_snapshots``: the rows
    the merge would insert, without staging them or the INSERT's conflict checks. Otherwise (or
    from the part where a concurrent load stored one of them meanwhile: its COPY is rolled back to
    a savepoint) each part is COPYed into a temporary table and merged. The parts are in id order,
    so rows are still locked in id order. A bad value in a later part fails the load after earlier
    parts were written: the caller's transaction rolls them back, so nothing of the batch is kept.
    """
    fields, ids, videos = group
    columns = stage_columns(fields)
    direct = sync_id is None and not conn.execute(_ANY_STORED, {"ids": ",".join(ids)}).scalar_one()
    stage: str | None = None
    inserted = written = 0

    def render(start: int, direct: bool) -> tuple[VideoGroup, Any]:
        end = start + COPY_CHUNK
        part = group_columns(fields, ids[start:end], videos[start:end], clean_texts=False)
        if direct:
            return part, _direct_rows(part, params)
        return part, copy_data(list(part.columns.values()))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiktok-copy") as pool:
        rendering = pool.submit(render, 0, direct)
        for start in range(0, len(ids), COPY_CHUNK):
            part, data = rendering.result()
            if start + COPY_CHUNK < len(ids):
                rendering = pool.submit(render, start + COPY_CHUNK, direct)
            if isinstance(data, tuple):  # rendered to go straight in
                if direct and _copy_straight_in(conn, data):
                    inserted += len(part)
                    written += len(part)
                    tally.snapshots_written += len(part) if data[3] is not None else 0
                    continue
                direct = False  # from here on, stage and merge
                data = copy_data(list(part.columns.values()))
            if stage is None:
                stage = _create_stage(conn, columns, number)
            else:
                conn.execute(text(f"TRUNCATE {stage}"))
            merge_videos, merge_snapshots, record_seen = _copy_load_statements(stage, columns, fields)
            copy_from(conn, stage, columns, data)
            del data
            part_inserted, part_written = conn.execute(merge_videos, params).one()
            inserted += part_inserted
            written += part_written
            if merge_snapshots is not None:
                tally.snapshots_written += _rowcount(conn, merge_snapshots, params)
            if sync_id is not None:
                tally.new_in_sync += _rowcount(conn, record_seen, {"sync": sync_id})
    return inserted, written


def _count(tally: _Tally, videos: int, inserted: int, written: int) -> None:
    tally.inserted += inserted
    tally.updated += written - inserted
    tally.unchanged += videos - written


def _load(
    conn: Connection,
    open_id: str,
    videos: Iterable[Mapping[str, Any]],
    captured_at: datetime,
    *,
    copy: bool | None = None,
    sync_id: int | None = None,
) -> _Tally:
    """Upsert videos (and their snapshots, and the sync's seen ids) inside the caller's transaction.

    Small batches travel as one JSON parameter, one statement a group of fields carried; large ones
    (``copy``; by default above ``JSON_BATCH_LIMIT``) are COPYed into a temporary table first.
    """
    if not isinstance(videos, Sequence):
        videos = list(videos)
    tally = _Tally()
    if not videos:
        return tally
    copy = len(videos) > JSON_BATCH_LIMIT if copy is None else copy
    params = {
        "open_id": open_id,
        "captured_at": captured_at,
        "day_start": datetime.combine(captured_at.date(), time(0), UTC),
        "snapshot_date": captured_at.date(),
    }
    if copy:
        for number, group in enumerate(order_videos(videos)):
            inserted, written = _load_copied(conn, group, number, params, sync_id, tally)
            _count(tally, len(group[1]), inserted, written)
        return tally
    for group in prepare_videos(videos):
        stmt = _json_load_statement(tuple(group.columns), group.fields, sync_id is not None)
        row = conn.execute(stmt, {**params, "videos": json.dumps(group.rows()), "sync": sync_id}).one()
        tally.snapshots_written += row._mapping.get("snapshots", 0)
        tally.new_in_sync += row._mapping.get("new_in_sync", 0)
        _count(tally, len(group), row.inserted, row.written)
    return tally


def _update_videos(conn: Connection, conditions: list[Any], **values: Any) -> int:
    """Set ``values`` on the videos matching ``conditions``; return how many.

    The rows are locked in id order first, the order every load writes in, so marking removals
    cannot deadlock with a concurrent page or query load of the same account.
    """
    rows = select(videos_table.c.id).where(*conditions).order_by(videos_table.c.id).with_for_update()
    return _rowcount(conn, update(videos_table).where(videos_table.c.id.in_(rows)).values(**values))


def _note_missing(conn: Connection, open_id: str, ids: Sequence[str], at: datetime) -> int:
    """Start the clock on live videos left out for the first time (``missing_since``); return how many."""
    if not ids:
        return 0
    return _update_videos(
        conn,
        [
            videos_table.c.open_id == open_id,
            videos_table.c.id.in_(ids),
            videos_table.c.removed_at.is_(None),
            videos_table.c.missing_since.is_(None),
            videos_table.c.last_seen_at <= at,  # a newer load saw it
        ],
        missing_since=at,
    )


def _mark_removals(
    conn: Connection, open_id: str, eligible: list[Any], at: datetime, *, run: str, rules: RemovalRules
) -> RemovalResult:
    """Mark the account's live videos matching ``eligible`` removed at ``at``, unless too many.

    The share guard (``rules.holds``): too many of the account's live videos at once marks none
    (they stay pending, a later run judges them again).
    """
    conditions = [
        videos_table.c.open_id == open_id,
        videos_table.c.removed_at.is_(None),
        videos_table.c.missing_since.is_not(None),
        *eligible,
    ]
    confirmed = conn.execute(select(func.count()).select_from(videos_table).where(*conditions)).scalar_one()
    if not confirmed:
        return RemovalResult(removed=0, held=0)
    live = conn.execute(
        select(func.count()).where(videos_table.c.open_id == open_id, videos_table.c.removed_at.is_(None))
    ).scalar_one()
    if rules.holds(confirmed, live):
        log.warning(
            "%s of account %s: %d of its %d live videos were missing twice, an hour or more apart; that is more "
            "than %s at once, which looks like an outage or an account made private, so none is marked removed "
            "(removals_held=%d). They stay pending and the next run judges them again. If the creator really "
            "deleted them, mark them by hand (see the tiktok_video_backfill runbook).",
            run,
            open_id,
            confirmed,
            live,
            rules.hold_rule(),
            confirmed,
        )
        return RemovalResult(removed=0, held=confirmed)
    return RemovalResult(removed=_update_videos(conn, conditions, removed_at=at), held=0)


#: Lock a sync's checkpoint row (bind ``sync``).
_LOCK_SYNC = select(sync_state).where(sync_state.c.sync_id == _SYNC_ID).with_for_update()
#: Move a sync's checkpoint past loaded pages (binds the counts to add, the new cursor or None).
_ADVANCE_SYNC = (
    update(sync_state)
    .where(sync_state.c.sync_id == _SYNC_ID)
    .values(
        cursor=func.coalesce(bindparam("new_cursor", type_=BigInteger), sync_state.c.cursor),
        pages=sync_state.c.pages + bindparam("add_pages", type_=Integer),
        videos_seen=sync_state.c.videos_seen + bindparam("add_videos_seen", type_=Integer),
        unidentified=sync_state.c.unidentified + bindparam("add_unidentified", type_=Integer),
        updated_at=_CAPTURED_AT,
    )
    .returning(*sync_state.c)
)


def _sync_state(row: Row[Any], *, resumed: bool) -> SyncState:
    return SyncState(
        sync_id=row.sync_id,
        open_id=row.open_id,
        mode=row.mode,
        cursor=row.cursor,
        window_start=_iso(row.window_start),
        started_at=_iso(row.started_at) or "",
        pages=row.pages,
        videos_seen=row.videos_seen,
        resumed=resumed,
        unidentified=row.unidentified,
        listed_at=_iso(row.listed_at),
        removal_suspects=row.removal_suspects,
    )


def _finish_result(row: Row[Any], *, unconfirmed: int) -> FinishResult:
    return FinishResult(
        sync_id=row.sync_id,
        open_id=row.open_id,
        mode=row.mode,
        pages=row.pages,
        videos_seen=row.videos_seen,
        removed=row.removed or 0,
        removal_suspects=row.removal_suspects or 0,
        suspects_live=row.suspects_live,
        suspects_unconfirmed=unconfirmed,
        unidentified=row.unidentified,
        removals_pending=row.removals_pending,
        removals_held=row.removals_held,
    )


# -- the warehouse ------------------------------------------------------------------------------


class Warehouse:
    """Idempotent loads of accounts, profile snapshots and videos, with resumable sync checkpoints."""

    def __init__(
        self, engine: Engine, *, removals: RemovalRules | None = None, young_days: int = DEFAULT_YOUNG_DAYS
    ) -> None:
        """
        :param removals: the removal policy; needed by the calls that judge removals, not by the others.
        :param young_days: the video loads also keep every capture of a video posted this recently
            (``tiktok.video_captures``, :mod:`tiktok_warehouse.history`); 0 keeps none.
        """
        self.engine = engine
        self._removals = removals
        self.young_days = young_days

    @property
    def removals(self) -> RemovalRules:
        if self._removals is None:
            raise TypeError("this Warehouse was built without a removal policy (removals=)")
        return self._removals

    def __repr__(self) -> str:
        return f"{type(self).__name__}(engine={self.engine!r})"

    # -- profiles ---------------------------------------------------------------------------

    def upsert_account_profile(self, open_id: str, user: Mapping[str, Any], *, now: datetime) -> None:
        """Update the account's display_name, username and avatar_url from a user object (present keys only)."""
        now = _utc(now, "now")
        values = {name: clean_text(user[name]) for name in ACCOUNT_PROFILE_FIELDS if name in user}
        with self.engine.begin() as conn:
            if values:
                stmt = (
                    update(accounts)
                    .where(
                        accounts.c.open_id == open_id,
                        tuple_(*(accounts.c[n] for n in values)).is_distinct_from(
                            tuple_(*(literal(v, Text) for v in values.values()))
                        ),
                    )
                    .values(**values, updated_at=now)
                )
                if _rowcount(conn, stmt):
                    return
            if conn.execute(select(accounts.c.open_id).where(accounts.c.open_id == open_id)).first() is None:
                raise AccountNotFound(open_id)

    def upsert_profile_snapshot(self, open_id: str, user: Mapping[str, Any], *, captured_at: datetime) -> bool:
        """Write the account's snapshot for captured_at's UTC date; return whether a row was written or changed."""
        captured_at = _utc(captured_at, "captured_at")
        values: dict[str, Any] = {}
        for name in PROFILE_SNAPSHOT_FIELDS:
            if name not in user:
                continue
            value = user[name]
            if name in _PROFILE_COUNT_FIELDS:
                values[name] = clean_int(value, name, f"Account {open_id}")
            elif name == "is_verified":
                values[name] = None if value is None else bool(value)
            else:
                values[name] = clean_text(value)
        if not values:
            return False
        stmt = pg_insert(profile_snapshots).values(
            open_id=open_id, snapshot_date=captured_at.date(), captured_at=captured_at, checked_at=captured_at, **values
        )
        new = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=[profile_snapshots.c.open_id, profile_snapshots.c.snapshot_date],
            set_={**{name: new[name] for name in values}, "captured_at": new.captured_at},
            where=and_(
                tuple_(*(profile_snapshots.c[n] for n in values)).is_distinct_from(tuple_(*(new[n] for n in values))),
                profile_snapshots.c.captured_at <= new.captured_at,
            ),
        )
        # Checked now, whether or not a value changed (the row above keeps its first captured_at).
        checked = (
            update(profile_snapshots)
            .where(
                profile_snapshots.c.open_id == open_id,
                profile_snapshots.c.snapshot_date == captured_at.date(),
                func.coalesce(profile_snapshots.c.checked_at, profile_snapshots.c.captured_at) < captured_at,
            )
            .values(checked_at=captured_at)
        )
        with self.engine.begin() as conn:
            self._require_account(conn, open_id)
            written = bool(_rowcount(conn, stmt))
            conn.execute(checked)
            return written

    @staticmethod
    def _require_account(conn: Connection, open_id: str) -> None:
        if conn.execute(select(accounts.c.open_id).where(accounts.c.open_id == open_id)).first() is None:
            raise AccountNotFound(open_id)

    # -- syncs ------------------------------------------------------------------------------

    def begin_sync(
        self,
        open_id: str,
        mode: str,
        *,
        window_start: datetime | None = None,
        now: datetime,
    ) -> SyncState:
        """
        Resume the unfinished ``mode`` sync of the account, or start one.

        A resumed sync keeps its own cursor, page count and ``window_start`` (the argument is then
        ignored), so a retried task continues where the crashed one stopped.

        :param window_start: incremental syncs only (required there): the oldest create_time the
            sync covers; videos created since then that it does not see are marked removed.
        """
        if mode not in SYNC_MODES:
            raise ValueError(f"Unknown sync mode {mode!r}; expected one of {', '.join(SYNC_MODES)}")
        if mode == "incremental" and window_start is None:
            raise ValueError("An incremental sync needs window_start: the oldest create_time it covers")
        if mode == "full" and window_start is not None:
            raise ValueError("A full sync covers every video; it takes no window_start")
        now = _utc(now, "now")
        window = _utc(window_start, "window_start") if window_start is not None else None
        unfinished = sync_state.c.finished_at.is_(None)
        stmt = (
            pg_insert(sync_state)
            .values(
                open_id=open_id,
                mode=mode,
                window_start=window,
                started_at=now,
                updated_at=now,
                pages=0,
                videos_seen=0,
            )
            .on_conflict_do_nothing(index_elements=[sync_state.c.open_id, sync_state.c.mode], index_where=unfinished)
            .returning(*sync_state.c)
        )
        with self.engine.begin() as conn:
            self._require_account(conn, open_id)
            while True:
                row = conn.execute(stmt).one_or_none()
                if row is not None:
                    log.info("Started %s sync %d of account %s", mode, row.sync_id, open_id)
                    return _sync_state(row, resumed=False)
                row = conn.execute(
                    select(sync_state)
                    .where(sync_state.c.open_id == open_id, sync_state.c.mode == mode, unfinished)
                    .with_for_update()
                ).one_or_none()
                if row is not None:
                    break
                # The unfinished sync that blocked the insert was finished in between: start anew.
        log.info(
            "Resuming %s sync %d of account %s after %d pages (cursor %s)",
            mode,
            row.sync_id,
            open_id,
            row.pages,
            row.cursor,
        )
        return _sync_state(row, resumed=True)

    @staticmethod
    def _lock_unfinished_sync(conn: Connection, sync: SyncState) -> Row[Any]:
        row = conn.execute(_LOCK_SYNC, {"sync": sync.sync_id}).one_or_none()
        if row is None or row.finished_at is not None:
            raise SyncNotActive(
                f"Sync {sync.sync_id} ({sync.mode}) of account {sync.open_id} is "
                f"{'unknown' if row is None else 'already finished'}; call begin_sync for a new one."
            )
        return row

    def load_video_page(
        self,
        sync: SyncState,
        videos: Sequence[Mapping[str, Any]],
        *,
        cursor: int | None,
        captured_at: datetime,
        unidentified: int = 0,
    ) -> PageResult:
        """
        Load one video/list page and advance the sync's checkpoint, in one transaction.

        :meth:`load_video_pages` with one page.

        :param cursor: the cursor the API returned with this page (the next one to request);
            None keeps the stored cursor.
        :param unidentified: videos of this page that came without a usable id (not in ``videos``).
            Added up in the checkpoint with the page, so a retry still knows the sync met them.
        """
        return self.load_video_pages(sync, [ListedPage(videos, cursor, unidentified)], captured_at=captured_at)

    def load_video_pages(self, sync: SyncState, pages: Sequence[ListedPage], *, captured_at: datetime) -> PageResult:
        """
        Load consecutive video/list pages and advance the sync's checkpoint past the last, in one transaction.

        Upserts the pages' videos (bringing back removed ones), writes today's snapshots of those
        carrying counts, records their ids as seen by the sync, and moves the checkpoint (the last
        cursor given, ``pages + len(pages)``, ``videos_seen``). A crash before the commit leaves
        nothing of any of the pages written; after it, the resumed sync starts at the page after
        the last. So pages are committed whole and in order, never one skipped.
        """
        captured_at = _utc(captured_at, "captured_at")
        if not pages:
            raise ValueError("load_video_pages needs at least one page")
        if any(page.unidentified < 0 for page in pages):
            raise ValueError(f"unidentified must not be negative, got {[page.unidentified for page in pages]}")
        videos = [video for page in pages for video in page.videos]
        cursors = [page.cursor for page in pages if page.cursor is not None]
        cursor = cursors[-1] if cursors else None
        unidentified = sum(page.unidentified for page in pages)
        with self.engine.begin() as conn:
            # Lock the checkpoint before any video row: finish_sync takes them in the same order.
            if self._lock_unfinished_sync(conn, sync).listed_at is not None:
                raise SyncNotActive(
                    f"The listing of sync {sync.sync_id} of account {sync.open_id} has ended; "
                    "it takes no more pages (confirm its removal suspects and finish it)."
                )
            tally = _load(conn, sync.open_id, videos, captured_at, sync_id=sync.sync_id)
            captures = record_captures(conn, sync.open_id, videos, captured_at, "list", self.young_days)
            row = conn.execute(
                _ADVANCE_SYNC,
                {
                    "sync": sync.sync_id,
                    "new_cursor": cursor,
                    "add_pages": len(pages),
                    "add_videos_seen": tally.new_in_sync,
                    "add_unidentified": unidentified,
                    "captured_at": captured_at,
                },
            ).one()
        return PageResult(
            inserted=tally.inserted,
            updated=tally.updated,
            unchanged=tally.unchanged,
            snapshots_written=tally.snapshots_written,
            new_in_sync=tally.new_in_sync,
            sync=_sync_state(row, resumed=sync.resumed),
            captures=captures,
        )

    @staticmethod
    def _end_listing(conn: Connection, row: Row[Any], now: datetime) -> Row[Any]:
        """Store the live videos the listing should have met but did not as removal suspects."""
        suspects = 0
        if row.pages and not row.unidentified:
            missing = [
                videos_table.c.open_id == row.open_id,
                videos_table.c.removed_at.is_(None),
                videos_table.c.first_seen_at <= row.started_at,
                ~exists().where(
                    sync_seen_videos.c.sync_id == row.sync_id,
                    sync_seen_videos.c.video_id == videos_table.c.id,
                ),
            ]
            if row.mode == "incremental":
                missing.append(videos_table.c.create_time >= row.window_start)
            selected = select(literal(row.sync_id, BigInteger), videos_table.c.id, true()).where(*missing)
            suspects = _rowcount(
                conn,
                pg_insert(sync_seen_videos)
                .from_select(["sync_id", "video_id", "suspect"], selected)
                .on_conflict_do_nothing(index_elements=[sync_seen_videos.c.sync_id, sync_seen_videos.c.video_id]),
            )
        elif row.unidentified:
            log.warning(
                "Sync %d of account %s met %d videos without a usable id; it names no removal suspect",
                row.sync_id,
                row.open_id,
                row.unidentified,
            )
        else:
            log.warning("Sync %d of account %s loaded no page; it names no removal suspect", row.sync_id, row.open_id)
        return conn.execute(
            update(sync_state)
            .where(sync_state.c.sync_id == row.sync_id)
            .values(listed_at=now, updated_at=now, removal_suspects=suspects)
            .returning(*sync_state.c)
        ).one()

    def end_listing(self, sync: SyncState, *, now: datetime) -> SyncState:
        """
        The listing reached its end: store the videos it should have met but did not as removal suspects.

        Suspects are the account's live videos that the sync did not see (``full``: all of them;
        ``incremental``: those created at or after ``window_start``), except videos first seen
        after the sync started (by a concurrent load). A sync that loaded no page, or that met
        videos without a usable id in any try, names none. Nothing is marked removed here: see
        :meth:`confirm_removals`. The suspects live with the checkpoint, so a crash before they
        are confirmed loses nothing, and a retry goes straight to confirming them. Idempotent.
        """
        now = _utc(now, "now")
        with self.engine.begin() as conn:
            row = self._lock_unfinished_sync(conn, sync)
            if row.listed_at is None:
                row = self._end_listing(conn, row, now)
                log.info(
                    "Listing of %s sync %d of account %s ended: %d pages, %d videos, %d removal suspects",
                    row.mode,
                    row.sync_id,
                    row.open_id,
                    row.pages,
                    row.videos_seen,
                    row.removal_suspects,
                )
        return _sync_state(row, resumed=sync.resumed)

    def removal_suspects(self, sync: SyncState) -> list[str]:
        """Return the ids of the sync's removal suspects that video/query has not answered for yet, in id order."""
        query = (
            select(sync_seen_videos.c.video_id)
            .where(sync_seen_videos.c.sync_id == sync.sync_id, sync_seen_videos.c.suspect)
            .order_by(sync_seen_videos.c.video_id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def confirm_removals(
        self,
        sync: SyncState,
        requested_ids: Sequence[str],
        videos: Sequence[Mapping[str, Any]],
        *,
        captured_at: datetime,
    ) -> ConfirmResult:
        """
        Apply a video/query answer about removal suspects, in one transaction with the checkpoint.

        A suspect the answer returns is live: it is updated (restored if it was marked removed,
        its pending removal cleared) and stays unmarked. A suspect asked about (``requested_ids``)
        and left out is recorded as missing at ``captured_at`` (and, the first time, starts its
        ``missing_since`` clock); nothing is marked here: :meth:`finish_sync` judges the missing
        ones together. Ids that are not suspects of this sync are not judged.

        :param requested_ids: the ids the call asked about; leave out any whose absence proves
            nothing (the hook narrows a batch whose answer held unidentifiable videos).
        """
        captured_at = _utc(captured_at, "captured_at")
        requested = sorted({str(i) for i in requested_ids})
        with self.engine.begin() as conn:
            row = self._lock_unfinished_sync(conn, sync)
            if row.listed_at is None:
                raise SyncNotActive(
                    f"Sync {sync.sync_id} of account {sync.open_id} is still listing; call end_listing first."
                )
            suspects = set(
                conn.execute(
                    select(sync_seen_videos.c.video_id).where(
                        sync_seen_videos.c.sync_id == row.sync_id,
                        sync_seen_videos.c.suspect,
                        sync_seen_videos.c.video_id.in_(requested),
                    )
                ).scalars()
            )
            tally = _load(conn, row.open_id, videos, captured_at)
            captures = record_captures(conn, row.open_id, videos, captured_at, "query", self.young_days)
            returned = {clean_text(v["id"]) for v in videos if v.get("id")}
            live = sorted(suspects & returned)
            gone = sorted(suspects - returned)
            if live:
                conn.execute(
                    update(sync_seen_videos)
                    .where(sync_seen_videos.c.sync_id == row.sync_id, sync_seen_videos.c.video_id.in_(live))
                    .values(suspect=False)
                )
            if gone:
                _note_missing(conn, row.open_id, gone, captured_at)
                conn.execute(
                    update(sync_seen_videos)
                    .where(sync_seen_videos.c.sync_id == row.sync_id, sync_seen_videos.c.video_id.in_(gone))
                    .values(suspect=False, missing_at=captured_at)
                )
            conn.execute(
                update(sync_state)
                .where(sync_state.c.sync_id == row.sync_id)
                .values(suspects_live=sync_state.c.suspects_live + len(live), updated_at=captured_at)
            )
        return ConfirmResult(
            suspects=len(suspects),
            live=len(live),
            missing=len(gone),
            updated=tally.inserted + tally.updated,
            snapshots_written=tally.snapshots_written,
            captures=captures,
        )

    def finish_sync(self, sync: SyncState, *, now: datetime) -> FinishResult:
        """
        Finish a sync: judge the suspects video/query left out, drop its seen ids and record its counts.

        A suspect video/query left out is marked removed only if it had already been missing
        (``videos.missing_since``) at least the policy's ``confirm_after`` before this sync's answer
        left it out -- a second look in a later run -- and only if the share guard lets the run
        mark that many (else they are held: none marked, a warning logged). The others stay
        pending for a later run. Suspects still unconfirmed (or never asked about) stay live, and
        the next sync judges them again. A sync whose listing was not ended is ended first (its
        suspects are then all unconfirmed). Finishing an already finished sync returns its stored
        result (a retried task is harmless).
        """
        now = _utc(now, "now")
        with self.engine.begin() as conn:
            row = conn.execute(
                select(sync_state).where(sync_state.c.sync_id == sync.sync_id).with_for_update()
            ).one_or_none()
            if row is None:
                raise SyncNotActive(f"Sync {sync.sync_id} of account {sync.open_id} does not exist")
            if row.finished_at is not None:
                judged = row.suspects_live + (row.removed or 0) + row.removals_pending + row.removals_held
                return _finish_result(row, unconfirmed=max(0, (row.removal_suspects or 0) - judged))
            if row.listed_at is None:
                row = self._end_listing(conn, row, now)
            seen = sync_seen_videos.c
            unconfirmed, missing = conn.execute(
                select(func.count().filter(seen.suspect), func.count().filter(seen.missing_at.is_not(None))).where(
                    seen.sync_id == row.sync_id
                )
            ).one()
            # Left out by this sync's answer, and missing since well before it: the second look.
            second_look = exists().where(
                seen.sync_id == row.sync_id,
                seen.video_id == videos_table.c.id,
                seen.missing_at.is_not(None),
                videos_table.c.missing_since <= seen.missing_at - literal(self.removals.confirm_after),
                videos_table.c.last_seen_at <= seen.missing_at,
            )
            judged = (
                _mark_removals(
                    conn,
                    row.open_id,
                    [second_look],
                    now,
                    run=f"{row.mode.capitalize()} sync {row.sync_id}",
                    rules=self.removals,
                )
                if missing
                else RemovalResult(removed=0, held=0)
            )
            conn.execute(sync_seen_videos.delete().where(seen.sync_id == row.sync_id))
            row = conn.execute(
                update(sync_state)
                .where(sync_state.c.sync_id == row.sync_id)
                .values(
                    finished_at=now,
                    updated_at=now,
                    removed=judged.removed,
                    removals_held=judged.held,
                    removals_pending=missing - judged.removed - judged.held,
                )
                .returning(*sync_state.c)
            ).one()
        if unconfirmed:
            log.warning(
                "Sync %d of account %s finishes with %d removal suspects video/query did not answer for; "
                "none of them is marked removed",
                row.sync_id,
                row.open_id,
                unconfirmed,
            )
        log.info(
            "Finished %s sync %d of account %s: %d pages, %d videos, %d removal suspects: "
            "%d confirmed removed, %d live, %d pending a later look, %d held, %d unconfirmed",
            row.mode,
            row.sync_id,
            row.open_id,
            row.pages,
            row.videos_seen,
            row.removal_suspects,
            row.removed,
            row.suspects_live,
            row.removals_pending,
            row.removals_held,
            unconfirmed,
        )
        return _finish_result(row, unconfirmed=unconfirmed)

    # -- covers and video/query -------------------------------------------------------------

    def stale_cover_video_ids(self, open_id: str, *, horizon: timedelta, now: datetime) -> list[str]:
        """Return the ids of the account's live videos whose cover URL is unknown or expires within ``horizon``."""
        limit = _utc(now, "now") + horizon
        query = (
            select(videos_table.c.id)
            .where(
                videos_table.c.open_id == open_id,
                videos_table.c.removed_at.is_(None),
                or_(videos_table.c.cover_expires_at.is_(None), videos_table.c.cover_expires_at < limit),
            )
            .order_by(videos_table.c.id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def stale_covers_by_priority(
        self, open_id: str, *, horizon: timedelta, now: datetime, limit: int
    ) -> tuple[list[str], int]:
        """The ``limit`` stale covers that matter most, and how many are stale in all.

        Stale as in :meth:`stale_cover_video_ids`; most recent upload first, then most viewed
        (unknown last), then id: when not every cover fits the budget, those people look at go first.
        """
        until = _utc(now, "now") + horizon
        stale = (
            videos_table.c.open_id == open_id,
            videos_table.c.removed_at.is_(None),
            or_(videos_table.c.cover_expires_at.is_(None), videos_table.c.cover_expires_at < until),
        )
        query = (
            select(videos_table.c.id)
            .where(*stale)
            .order_by(
                videos_table.c.create_time.desc().nulls_last(),
                videos_table.c.view_count.desc().nulls_last(),
                videos_table.c.id,
            )
            .limit(limit)
        )
        with self.engine.connect() as conn:
            chosen = list(conn.execute(query).scalars())
            total = conn.execute(select(func.count()).select_from(videos_table).where(*stale)).scalar_one()
        return chosen, total

    def removal_recheck_ids(self, open_id: str, *, now: datetime) -> list[str]:
        """
        Return the ids the cover refresh asks about again, in id order.

        The account's pending removals (left out once: a later look confirms or clears them) and
        its videos marked removed within the policy's ``recheck`` (one wrongly marked comes back).
        """
        since = _utc(now, "now") - self.removals.recheck
        query = (
            select(videos_table.c.id)
            .where(
                videos_table.c.open_id == open_id,
                or_(
                    and_(videos_table.c.removed_at.is_(None), videos_table.c.missing_since.is_not(None)),
                    videos_table.c.removed_at >= since,
                ),
            )
            .order_by(videos_table.c.id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def apply_video_query(
        self,
        open_id: str,
        requested_ids: Sequence[str],
        videos: Sequence[Mapping[str, Any]],
        *,
        captured_at: datetime,
    ) -> QueryResult:
        """
        Store a video/query answer: upsert the returned videos; report the requested ids it left out.

        video/query silently leaves out videos that were deleted or made private, but also, in an
        outage, videos that are live; so one answer marks nothing. A returned video is updated
        (restored if it was marked removed; its pending removal cleared). A live video left out
        for the first time starts its ``missing_since`` clock (``pending``); one left out that was
        already missing at least the policy's ``confirm_after`` earlier is ``confirmed``: the caller
        passes the confirmed ids of its whole run to :meth:`mark_removals`. One transaction.
        """
        captured_at = _utc(captured_at, "captured_at")
        requested = sorted({str(i) for i in requested_ids})
        returned = sorted({clean_text(v["id"]) for v in videos if v.get("id")})
        with self.engine.begin() as conn:
            restored = 0
            if returned:
                restored = conn.execute(
                    select(func.count()).where(
                        videos_table.c.open_id == open_id,
                        videos_table.c.id.in_(returned),
                        videos_table.c.removed_at.is_not(None),
                        videos_table.c.last_seen_at <= captured_at,
                    )
                ).scalar_one()
            tally = _load(conn, open_id, videos, captured_at)
            captures = record_captures(conn, open_id, videos, captured_at, "query", self.young_days)
            missing = [i for i in requested if i not in set(returned)]
            confirmed: list[str] = []
            pending = 0
            if missing:
                confirmed = list(
                    conn.execute(
                        select(videos_table.c.id)
                        .where(
                            videos_table.c.open_id == open_id,
                            videos_table.c.id.in_(missing),
                            videos_table.c.removed_at.is_(None),
                            videos_table.c.missing_since <= captured_at - self.removals.confirm_after,
                            videos_table.c.last_seen_at <= captured_at,
                        )
                        .order_by(videos_table.c.id)
                    ).scalars()
                )
                pending = _note_missing(conn, open_id, missing, captured_at)
        return QueryResult(
            requested=len(requested),
            returned=len(returned),
            inserted=tally.inserted,
            updated=tally.updated,
            unchanged=tally.unchanged,
            snapshots_written=tally.snapshots_written,
            restored=restored,
            missing=missing,
            pending=pending,
            confirmed=confirmed,
            captures=captures,
        )

    def mark_removals(self, open_id: str, video_ids: Sequence[str], *, now: datetime) -> RemovalResult:
        """
        Mark removed the ids one run's video/query answers ``confirmed`` (see :meth:`apply_video_query`).

        Only videos still pending since at least the policy's ``confirm_after`` before ``now`` are
        marked (a load that saw one since cleared it), and none if the policy's share guard holds
        them (see ``tiktok_pipeline.removals``): then a warning is logged and a later run judges them.
        """
        now = _utc(now, "now")
        ids = sorted({str(i) for i in video_ids})
        if not ids:
            return RemovalResult(removed=0, held=0)
        eligible = [videos_table.c.id.in_(ids), videos_table.c.missing_since <= now - self.removals.confirm_after]
        with self.engine.begin() as conn:
            result = _mark_removals(conn, open_id, eligible, now, run="Cover refresh", rules=self.removals)
        if result.removed:
            log.info(
                "Marked %d videos of account %s removed: missing twice, an hour or more apart", result.removed, open_id
            )
        return result

    # -- bulk -------------------------------------------------------------------------------

    def upsert_videos(self, open_id: str, videos: Iterable[Mapping[str, Any]], *, captured_at: datetime) -> LoadResult:
        """Upsert a large batch of videos (and today's snapshots) in one transaction, through COPY."""
        captured_at = _utc(captured_at, "captured_at")
        with self.engine.begin() as conn:
            self._require_account(conn, open_id)
            tally = _load(conn, open_id, videos, captured_at, copy=True)
        return tally.load_result()
