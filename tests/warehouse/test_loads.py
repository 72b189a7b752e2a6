"""Video and profile loads: idempotent, batched, atomic with their checkpoint, and exact with odd data."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2.extensions
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

from tiktok_pipeline.removals import POLICY
from tiktok_provider.sanitize import clean_text
from tiktok_warehouse import loads
from tiktok_warehouse.loads import (
    FinishResult,
    ListedPage,
    LoadResult,
    RemovalResult,
    SyncNotActive,
    SyncState,
    Warehouse,
)
from tiktok_warehouse.tokens import AccountNotFound

pytestmark = pytest.mark.integration

Video = Callable[..., dict[str, Any]]
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # the clock of the make_video fixture (conftest.T0)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def rows(engine: Engine, open_id: str) -> dict[str, dict[str, Any]]:
    """The account's videos, by id, with their row version (xmin, ctid)."""
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT *, xmin::text AS xmin, ctid::text AS ctid FROM tiktok.videos WHERE open_id = :o"),
            {"o": open_id},
        ).all()
    return {row.id: dict(row._mapping) for row in found}


def snapshots(engine: Engine, open_id: str) -> dict[tuple[str, Any], dict[str, Any]]:
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT s.*, s.xmin::text AS xmin, s.ctid::text AS ctid FROM tiktok.video_snapshots s"
                " JOIN tiktok.videos v ON v.id = s.video_id WHERE v.open_id = :o"
            ),
            {"o": open_id},
        ).all()
    return {(row.video_id, row.snapshot_date): dict(row._mapping) for row in found}


def versions(table: dict[Any, dict[str, Any]]) -> dict[Any, tuple[str, str]]:
    return {key: (row["xmin"], row["ctid"]) for key, row in table.items()}


def sync_row(engine: Engine, sync_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(
            conn.execute(text("SELECT * FROM tiktok.sync_state WHERE sync_id = :s"), {"s": sync_id}).one()._mapping
        )


def seen_count(engine: Engine, sync_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT count(*) FROM tiktok.sync_seen_videos WHERE sync_id = :s"), {"s": sync_id}
        ).scalar_one()


def settle(
    warehouse: Warehouse,
    sync: SyncState,
    *,
    catalogue: list[dict[str, Any]],
    gone: set[str] = frozenset(),  # type: ignore[assignment]
    now: datetime,
) -> FinishResult:
    """End the listing, answer for its suspects as video/query would (leaving out ``gone``), finish."""
    sync = warehouse.end_listing(sync, now=now)
    suspects = warehouse.removal_suspects(sync)
    by_id = {v["id"]: v for v in catalogue}
    answer = [by_id[i] for i in suspects if i in by_id and i not in gone]
    if suspects:
        warehouse.confirm_removals(sync, suspects, answer, captured_at=now)
    return warehouse.finish_sync(sync, now=now)


@contextmanager
def crash_on(engine: Engine, fragment: str) -> Iterator[None]:
    """Make the statement containing ``fragment`` fail, as if the worker died right there."""

    def fail(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if fragment in statement:
            raise RuntimeError(f"simulated crash before: {fragment}")

    event.listen(engine, "before_cursor_execute", fail)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", fail)


# -- idempotency --------------------------------------------------------------------------------


def test_same_input_again_writes_nothing(warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video):
    batch = [make_video(i) for i in range(50)]
    first = warehouse.upsert_videos(account, batch, captured_at=T0)
    assert (first.inserted, first.updated, first.unchanged, first.snapshots_written) == (50, 0, 0, 50)
    videos_before, snaps_before = rows(wh_engine, account), snapshots(wh_engine, account)

    # The same data again, later the same UTC day, through each load path.
    again = warehouse.upsert_videos(account, batch, captured_at=T0 + timedelta(hours=2))
    sync = warehouse.begin_sync(account, "full", now=T0 + timedelta(hours=3))
    page = warehouse.load_video_page(sync, batch[:20], cursor=1, captured_at=T0 + timedelta(hours=3))
    query = warehouse.apply_video_query(
        account, [v["id"] for v in batch[20:40]], batch[20:40], captured_at=T0 + timedelta(hours=4)
    )

    assert (again.inserted, again.updated, again.unchanged, again.snapshots_written) == (0, 0, 50, 0)
    assert (page.inserted, page.updated, page.unchanged, page.snapshots_written) == (0, 0, 20, 0)
    assert (query.inserted, query.updated, query.unchanged, query.pending, query.restored) == (0, 0, 20, 0, 0)
    # Not one row rewritten: same xmin and ctid, so no dead tuples; last_seen_at stays put.
    assert versions(rows(wh_engine, account)) == versions(videos_before)
    assert versions(snapshots(wh_engine, account)) == versions(snaps_before)
    assert {r["last_seen_at"] for r in rows(wh_engine, account).values()} == {T0}


def test_a_large_batch_loads_in_parts_as_it_would_in_one(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COPY_CHUNK videos at a time, the next part rendered meanwhile: the same rows and counts, one transaction."""
    monkeypatch.setattr(loads, "COPY_CHUNK", 7)
    first = [make_video(i) for i in range(30)]
    assert asdict(warehouse.upsert_videos(account, first[:12], captured_at=T0)) == asdict(
        LoadResult(inserted=12, snapshots_written=12)
    )
    batch = [dict(v, like_count=v["like_count"] + 1) if i % 3 == 0 else v for i, v in enumerate(first)]
    batch = [*batch, {k: v for k, v in make_video(40).items() if k != "embed_html"}]  # a second group
    result = warehouse.upsert_videos(account, batch[::-1], captured_at=T0 + HOUR)
    assert (result.inserted, result.updated, result.unchanged, result.snapshots_written) == (19, 4, 8, 23)
    stored = rows(wh_engine, account)
    assert {i: r["like_count"] for i, r in stored.items()} == {v["id"]: v["like_count"] for v in batch}
    assert len(snapshots(wh_engine, account)) == 31

    # A bad value in the last part: the parts merged before it are rolled back with it.
    before = versions(rows(wh_engine, account))
    bad = [dict(v, view_count=v["view_count"] + 5) for v in batch[:30]] + [dict(make_video(50), height=2**31)]
    with pytest.raises(ValueError, match="height"):
        warehouse.upsert_videos(account, bad, captured_at=T0 + 2 * HOUR)
    assert versions(rows(wh_engine, account)) == before


def test_a_first_load_copied_straight_in_stores_what_the_merge_would(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video, monkeypatch: pytest.MonkeyPatch
) -> None:
    """None of the videos stored: COPY straight into the tables, the same rows as staging and merging."""
    monkeypatch.setattr(loads, "COPY_CHUNK", 7)
    batch = [make_video(i) for i in range(20)]
    batch[3] = {k: v for k, v in batch[3].items() if k not in ("embed_html", "like_count")}  # a second group
    batch[5] = dict(batch[5], cover_image_url="https://p16.tiktokcdn.com/x.jpeg", create_time=0)  # no expiry

    def load(straight: bool) -> tuple[LoadResult, dict[str, Any], dict[Any, Any]]:
        with wh_engine.begin() as conn:
            conn.execute(text("DELETE FROM tiktok.videos WHERE open_id = :o"), {"o": account})
        if not straight:
            monkeypatch.setattr(loads, "_copy_straight_in", lambda conn, rows: False)
        result = warehouse.upsert_videos(account, batch, captured_at=T0)
        monkeypatch.undo()
        monkeypatch.setattr(loads, "COPY_CHUNK", 7)
        strip = ("xmin", "ctid")
        stored = {k: {c: v for c, v in r.items() if c not in strip} for k, r in rows(wh_engine, account).items()}
        snaps = {k: {c: v for c, v in r.items() if c not in strip} for k, r in snapshots(wh_engine, account).items()}
        return result, stored, snaps

    straight, merged = load(straight=True), load(straight=False)
    assert straight == merged
    assert asdict(straight[0]) == asdict(LoadResult(inserted=20, snapshots_written=20))
    assert straight[1][batch[5]["id"]]["cover_expires_at"] is None
    assert straight[1][batch[5]["id"]]["create_time"] == datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("engine_fixture", ["wh_engine", "wh_engine_psycopg3"])
def test_a_video_stored_meanwhile_sends_the_rest_through_the_merge(
    engine_fixture: str,
    request: pytest.FixtureRequest,
    wh_engine: Engine,
    account: str,
    make_video: Video,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A concurrent load stores one of the videos after the check: that part's COPY rolls back, the merge takes over."""
    warehouse = Warehouse(request.getfixturevalue(engine_fixture), removals=POLICY)
    monkeypatch.setattr(loads, "COPY_CHUNK", 7)
    batch = [make_video(i) for i in range(20)]
    raced = batch[9]  # in the second part
    copy_straight_in = loads._copy_straight_in
    calls = []

    def racing(conn: Any, rows_: Any) -> bool:
        calls.append(rows_)
        if len(calls) == 2:
            with wh_engine.begin() as other:
                other.execute(
                    text(
                        "INSERT INTO tiktok.videos (id, open_id, title, first_seen_at, last_seen_at)"
                        " VALUES (:id, :o, 'raced', :t, :t)"
                    ),
                    {"id": raced["id"], "o": account, "t": T0 - HOUR},
                )
        return copy_straight_in(conn, rows_)

    monkeypatch.setattr(loads, "_copy_straight_in", racing)
    result = warehouse.upsert_videos(account, batch, captured_at=T0)
    assert len(calls) == 2  # the third part is merged without trying
    assert (result.inserted, result.updated, result.unchanged, result.snapshots_written) == (19, 1, 0, 20)
    stored = rows(wh_engine, account)
    assert {i: r["title"] for i, r in stored.items()} == {v["id"]: v["title"] for v in batch}
    assert stored[raced["id"]]["first_seen_at"] == T0 - HOUR
    assert len(snapshots(wh_engine, account)) == 20


def test_no_op_reload_updates_no_tuples_per_pg_stat(wh_url: str, account: str, make_video: Video) -> None:
    """The same check through Postgres' own counters, on one backend so its stats can be flushed."""
    engine = create_engine(wh_url, pool_size=1, max_overflow=0)
    warehouse = Warehouse(engine, removals=POLICY)

    def writes() -> tuple[int, ...]:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_force_next_flush()"))
        with engine.connect() as conn:  # the previous statement's backend went idle and flushed
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            return tuple(
                conn.execute(
                    text(
                        # inserts too: a COPY tried and rolled back would have written (and left dead) rows
                        "SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE schemaname = 'tiktok'"
                        " AND relname IN ('videos', 'video_snapshots') ORDER BY relname"
                    )
                ).scalars()
            )

    try:
        batch = [make_video(i) for i in range(30)]
        warehouse.upsert_videos(account, batch, captured_at=T0)
        before = writes()
        warehouse.upsert_videos(account, batch, captured_at=T0 + timedelta(minutes=5))
        assert writes() == before
        changed = [dict(batch[0], like_count=batch[0]["like_count"] + 1)]
        warehouse.upsert_videos(account, changed, captured_at=T0 + timedelta(minutes=10))
        assert writes() == (before[0] + 1, before[1] + 1)  # the check itself can see a write
    finally:
        engine.dispose()


def test_changed_rows_only_are_rewritten_and_last_seen_moves_daily(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    batch = [make_video(i) for i in range(10)]
    warehouse.upsert_videos(account, batch, captured_at=T0)
    before = rows(wh_engine, account)

    later = T0 + timedelta(hours=1)
    batch[3] = dict(batch[3], like_count=999_999)
    result = warehouse.upsert_videos(account, batch, captured_at=later)
    after = rows(wh_engine, account)
    assert (result.inserted, result.updated, result.unchanged, result.snapshots_written) == (0, 1, 9, 1)
    changed_id = batch[3]["id"]
    assert after[changed_id]["like_count"] == 999_999
    assert after[changed_id]["last_seen_at"] == later
    assert after[changed_id]["first_seen_at"] == T0
    unchanged = {k: v for k, v in versions(after).items() if k != changed_id}
    assert unchanged == {k: v for k, v in versions(before).items() if k != changed_id}

    # The first load of the next UTC day touches every row (last_seen_at) and adds that day's snapshots.
    next_day = T0 + DAY
    result = warehouse.upsert_videos(account, batch, captured_at=next_day)
    assert (result.updated, result.unchanged, result.snapshots_written) == (10, 0, 10)
    assert {r["last_seen_at"] for r in rows(wh_engine, account).values()} == {next_day}
    dates = sorted({date for _, date in snapshots(wh_engine, account)})
    assert dates == [T0.date(), next_day.date()]


def test_older_data_never_overwrites_newer(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    warehouse.upsert_videos(account, [make_video(1, like_count=500)], captured_at=T0 + timedelta(hours=2))
    stale = warehouse.upsert_videos(account, [make_video(1, like_count=400)], captured_at=T0 + timedelta(hours=1))
    assert stale.updated == 0
    (row,) = rows(wh_engine, account).values()
    assert row["like_count"] == 500
    assert [s["like_count"] for s in snapshots(wh_engine, account).values()] == [500]


def test_absent_keys_keep_stored_values_and_explicit_nulls_clear_them(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    full = make_video(1)
    warehouse.upsert_videos(account, [full], captured_at=T0)
    # A video/query that asked for counts only (the JSON path) and a bulk load with counts only.
    only_counts = {"id": full["id"], "like_count": 7, "view_count": 70}
    warehouse.apply_video_query(account, [full["id"]], [only_counts], captured_at=T0 + timedelta(hours=1))
    (row,) = rows(wh_engine, account).values()
    assert (row["like_count"], row["view_count"]) == (7, 70)
    for key in ("title", "video_description", "embed_html", "cover_image_url", "duration", "comment_count"):
        assert row[key] == full[key]
    assert row["create_time"] == datetime.fromtimestamp(full["create_time"], UTC)
    assert row["cover_expires_at"] is not None
    snap = snapshots(wh_engine, account)[(full["id"], T0.date())]
    assert (snap["like_count"], snap["view_count"], snap["comment_count"]) == (7, 70, full["comment_count"])

    # Mixed key sets in one batch: each video keeps what it did not carry.
    other = make_video(2)
    warehouse.upsert_videos(account, [other], captured_at=T0)
    mixed = [{"id": full["id"], "title": None}, {"id": other["id"], "share_count": 5}]
    result = warehouse.upsert_videos(account, mixed, captured_at=T0 + timedelta(hours=2))
    assert result.updated == 2
    stored = rows(wh_engine, account)
    assert stored[full["id"]]["title"] is None  # an explicit null is stored as NULL
    assert stored[full["id"]]["like_count"] == 7
    assert (stored[other["id"]]["share_count"], stored[other["id"]]["title"]) == (5, other["title"])


def test_a_batch_is_deduplicated_last_one_wins(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    result = warehouse.upsert_videos(
        account, [make_video(1, like_count=1), make_video(2), make_video(1, like_count=3)], captured_at=T0
    )
    assert (result.inserted, result.snapshots_written) == (2, 2)
    assert rows(wh_engine, account)[make_video(1)["id"]]["like_count"] == 3


def test_a_video_never_moves_to_another_account(
    warehouse: Warehouse, wh_engine: Engine, new_account: Callable[..., str], make_video: Video
) -> None:
    owner, intruder = new_account(), new_account()
    warehouse.upsert_videos(owner, [make_video(1)], captured_at=T0)
    result = warehouse.upsert_videos(intruder, [make_video(1, title="hijacked")], captured_at=T0 + timedelta(1))
    assert (result.updated, result.unchanged) == (0, 1)
    assert rows(wh_engine, owner)[make_video(1)["id"]]["title"] == make_video(1)["title"]
    assert rows(wh_engine, intruder) == {}


def test_unknown_account_is_reported(warehouse: Warehouse, make_video: Video) -> None:
    with pytest.raises(AccountNotFound):
        warehouse.upsert_videos("open-nobody", [make_video(1)], captured_at=T0)
    with pytest.raises(AccountNotFound):
        warehouse.begin_sync("open-nobody", "full", now=T0)
    with pytest.raises(AccountNotFound):
        warehouse.upsert_profile_snapshot("open-nobody", {"follower_count": 1}, captured_at=T0)
    with pytest.raises(AccountNotFound):
        warehouse.upsert_account_profile("open-nobody", {"display_name": "x"}, now=T0)


def test_naive_times_are_refused(warehouse: Warehouse, account: str, make_video: Video) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        warehouse.upsert_videos(account, [make_video(1)], captured_at=datetime(2026, 3, 2, 9, 30))


# -- batching -----------------------------------------------------------------------------------


class CountingCursor(psycopg2.extensions.cursor):
    """Counts every round trip a DB-API cursor makes, COPY included."""

    calls = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        CountingCursor.calls += 1
        return super().execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        CountingCursor.calls += 1
        return super().executemany(*args, **kwargs)

    def copy_expert(self, *args: Any, **kwargs: Any) -> Any:
        CountingCursor.calls += 1
        return super().copy_expert(*args, **kwargs)


@pytest.fixture
def counting_engine(wh_url: str) -> Iterator[tuple[Engine, list[str]]]:
    engine = create_engine(wh_url, connect_args={"cursor_factory": CountingCursor})
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *a: statements.append(statement))
    with engine.connect() as conn:  # open the pooled connection before counting
        conn.execute(text("SELECT 1"))
    statements.clear()
    CountingCursor.calls = 0
    yield engine, statements
    engine.dispose()


def test_a_100k_video_load_is_a_handful_of_statements(
    counting_engine: tuple[Engine, list[str]], account: str, make_video: Video
) -> None:
    engine, statements = counting_engine
    batch = [make_video(i, create_time=int(T0.timestamp()) - 60 * i) for i in range(100_000)]
    result = Warehouse(engine, removals=POLICY).upsert_videos(account, batch, captured_at=T0)
    assert (result.inserted, result.snapshots_written) == (100_000, 100_000)
    # Account check, CREATE TEMP; then per part of COPY_CHUNK videos: TRUNCATE, merge, snapshots.
    parts = -(-100_000 // loads.COPY_CHUNK)
    assert parts <= 10
    assert len(statements) <= 3 + 3 * parts, statements
    assert CountingCursor.calls <= 5 + 4 * parts  # ... plus one COPY a part, through the driver itself
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM tiktok.videos WHERE open_id = :o"), {"o": account}).scalar()
            == 100_000
        )


def test_a_page_is_a_constant_number_of_statements(
    counting_engine: tuple[Engine, list[str]], account: str, make_video: Video
) -> None:
    engine, statements = counting_engine
    warehouse = Warehouse(engine, removals=POLICY)
    sync = warehouse.begin_sync(account, "full", now=T0)
    counts = []
    for size in (1, 20):
        statements.clear()
        sync = warehouse.load_video_page(sync, [make_video(i) for i in range(size)], cursor=size, captured_at=T0).sync
        counts.append(len(statements))
    # lock checkpoint, videos, snapshots, seen ids, young videos' captures, checkpoint
    assert counts[0] == counts[1] <= 6


def test_concurrent_overlapping_loads_do_not_deadlock(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    batch = [make_video(i) for i in range(300)]
    warehouse.upsert_videos(account, batch, captured_at=T0)
    errors: list[BaseException] = []

    def load(order: list[dict[str, Any]], likes: int) -> None:
        try:
            for step in range(3):
                changed = [dict(v, like_count=likes + step) for v in order]
                warehouse.apply_video_query(account, [], changed, captured_at=T0 + DAY)
                warehouse.upsert_videos(account, changed, captured_at=T0 + DAY)
        except BaseException as exc:
            errors.append(exc)

    def sync_and_finish() -> None:
        # finish_sync marks (and the loads restore) removals across the same rows meanwhile.
        try:
            for _ in range(3):
                sync = warehouse.begin_sync(account, "full", now=T0 + DAY)
                sync = warehouse.load_video_page(sync, batch[::3][::-1], cursor=None, captured_at=T0 + DAY).sync
                warehouse.finish_sync(sync, now=T0 + DAY)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=load, args=(batch, 10)),
        threading.Thread(target=load, args=(list(reversed(batch)), 20)),
        threading.Thread(target=load, args=(batch[::2] + batch[1::2], 30)),
        threading.Thread(target=sync_and_finish),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []


# -- odd data -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["page", "bulk"])
def test_text_edge_cases_round_trip(
    path: str, warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    long_text = "🎉 long caption ✨ " * 400  # 6800 characters, emoji all along
    cases = {
        "nul": ("before\x00after", "beforeafter"),
        "emoji": ("Family 👨‍👩‍👧‍👦 flag 🇯🇵 skin 👍🏽 zwj", "Family 👨‍👩‍👧‍👦 flag 🇯🇵 skin 👍🏽 zwj"),
        "long": (long_text, long_text),
        "copy-specials": ("tab\there\nnewline\r\\backslash \\N \\. end", "tab\there\nnewline\r\\backslash \\N \\. end"),
        "null-marker": ("\\N", "\\N"),
        "empty": ("", ""),
        "lone-surrogate": ("cut \ud83d here", "cut \ufffd here"),
        "rtl-and-combining": ("مرحبا e\u0301 한국어", "مرحبا e\u0301 한국어"),
    }
    batch = [make_video(i, title=raw, video_description=raw) for i, (raw, _) in enumerate(cases.values())]
    if path == "page":
        sync = warehouse.begin_sync(account, "full", now=T0)
        warehouse.load_video_page(sync, batch, cursor=None, captured_at=T0)
    else:
        warehouse.upsert_videos(account, batch, captured_at=T0)
    stored = rows(wh_engine, account)
    for video, (name, (_, expected)) in zip(batch, cases.items(), strict=True):
        assert stored[video["id"]]["title"] == expected, name
        assert stored[video["id"]]["video_description"] == expected, name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(), min_size=1, max_size=8))
def test_any_text_survives_both_paths(
    texts: list[str], warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    base = uuid.uuid4().int % 10**6 * 100
    for path in ("page", "bulk"):
        batch = [make_video(base + i, title=t, create_time=int(T0.timestamp())) for i, t in enumerate(texts)]
        base += len(texts)
        if path == "page":
            warehouse.apply_video_query(account, [], batch, captured_at=T0)
        else:
            warehouse.upsert_videos(account, batch, captured_at=T0)
        with wh_engine.connect() as conn:
            stored = dict(
                conn.execute(
                    text("SELECT id, title FROM tiktok.videos WHERE id = ANY(:ids)"), {"ids": [v["id"] for v in batch]}
                ).all()
            )
        assert [stored[v["id"]] for v in batch] == [clean_text(t) for t in texts], path


@pytest.mark.parametrize("path", ["page", "bulk"])
def test_int64_counts_round_trip(
    path: str, warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    biggest = 2**63 - 1
    video = make_video(1, like_count=biggest, comment_count=2**31, share_count=0, view_count=biggest - 1)
    if path == "page":
        warehouse.load_video_page(warehouse.begin_sync(account, "full", now=T0), [video], cursor=None, captured_at=T0)
    else:
        warehouse.upsert_videos(account, [video], captured_at=T0)
    (row,) = rows(wh_engine, account).values()
    assert (row["like_count"], row["comment_count"], row["share_count"], row["view_count"]) == (
        biggest,
        2**31,
        0,
        biggest - 1,
    )
    (snap,) = snapshots(wh_engine, account).values()
    assert snap["like_count"] == biggest


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("like_count", 2**63, "out of range"),
        ("duration", 2**31, "out of range"),
        ("view_count", "lots", "not an integer"),
        ("create_time", -5, "out of range"),
    ],
)
def test_bad_numbers_fail_clearly_and_write_nothing(
    field: str, value: Any, message: str, warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    batch = [make_video(1), make_video(2, **{field: value})]
    with pytest.raises(ValueError, match=message) as failed:
        warehouse.upsert_videos(account, batch, captured_at=T0)
    assert batch[1]["id"] in str(failed.value)
    assert rows(wh_engine, account) == {}


def test_numeric_strings_and_create_time(warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video):
    warehouse.upsert_videos(account, [make_video(1, like_count="42", create_time=1_700_000_000)], captured_at=T0)
    (row,) = rows(wh_engine, account).values()
    assert row["like_count"] == 42
    assert row["create_time"] == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://p16.tiktokcdn.com/obj/a.jpeg?x-expires=1772447400&x-signature=abc", datetime(2026, 3, 2, 10, 30)),
        ("https://p16.tiktokcdn.com/obj/a.jpeg?x-signature=abc&X-Expires=1772447400", datetime(2026, 3, 2, 10, 30)),
        ("https://p16.tiktokcdn.com/obj/a.jpeg?x-expires=1772447400000&x-signature=a", datetime(2026, 3, 2, 10, 30)),
        ("https://p16.tiktokcdn.com/obj/a.jpeg?x-expires=soon&x-signature=abc", None),
        ("https://p16.tiktokcdn.com/obj/a.jpeg?x-signature=abc", None),
        ("https://p16.tiktokcdn.com/obj/a.jpeg?x-expires=&x-signature=abc", None),
        ("https://p16.tiktokcdn.com/obj/a.jpeg?x-expires=99999999999999999999", None),
        ("not a url at all", None),
        ("", None),
    ],
)
def test_cover_expiry_is_parsed_robustly(
    url: str, expected: datetime | None, warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    warehouse.upsert_videos(account, [make_video(1, cover_image_url=url)], captured_at=T0)
    (row,) = rows(wh_engine, account).values()
    assert row["cover_image_url"] == url
    assert row["cover_expires_at"] == (expected.replace(tzinfo=UTC) if expected else None)


# -- checkpoints --------------------------------------------------------------------------------


def test_a_failure_after_the_upsert_leaves_neither_rows_nor_checkpoint(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    sync = warehouse.begin_sync(account, "full", now=T0)
    first = warehouse.load_video_page(sync, [make_video(i) for i in range(5)], cursor=5000, captured_at=T0)
    before = sync_row(wh_engine, sync.sync_id)

    with crash_on(wh_engine, "UPDATE tiktok.sync_state"), pytest.raises(RuntimeError, match="simulated crash"):
        # The videos, snapshots and seen ids of this page were written when the checkpoint fails.
        warehouse.load_video_page(first.sync, [make_video(i) for i in range(5, 10)], cursor=4000, captured_at=T0)

    assert sorted(rows(wh_engine, account)) == sorted(make_video(i)["id"] for i in range(5))
    assert len(snapshots(wh_engine, account)) == 5
    assert seen_count(wh_engine, sync.sync_id) == 5
    after = sync_row(wh_engine, sync.sync_id)
    assert (
        (after["cursor"], after["pages"], after["videos_seen"])
        == (5000, 1, 5)
        == (
            before["cursor"],
            before["pages"],
            before["videos_seen"],
        )
    )


def test_pages_loaded_together_commit_whole_with_the_checkpoint_past_the_last(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    sync = warehouse.begin_sync(account, "full", now=T0)
    pages = [
        ListedPage([make_video(i) for i in range(0, 5)], cursor=5000),
        # a video repeated across the boundary counts once; a page without a cursor keeps the last one
        ListedPage([make_video(i) for i in range(4, 9)], cursor=None, unidentified=1),
        ListedPage([make_video(i) for i in range(9, 12)], cursor=3000),
        ListedPage([], cursor=None),
    ]
    result = warehouse.load_video_pages(sync, pages, captured_at=T0)
    assert (result.inserted, result.new_in_sync, result.snapshots_written) == (12, 12, 12)
    assert (result.sync.cursor, result.sync.pages, result.sync.videos_seen, result.sync.unidentified) == (
        3000,
        4,
        12,
        1,
    )
    assert seen_count(wh_engine, sync.sync_id) == 12

    # A failure anywhere in the next batch leaves none of its pages, and the checkpoint where it was.
    bad = [{"id": make_video(99)["id"], "duration": 2**31 - 1, "height": 2**31}]
    with pytest.raises(ValueError, match="height"):
        warehouse.load_video_pages(
            result.sync,
            [ListedPage([make_video(i) for i in range(12, 20)], cursor=2000), ListedPage(bad, cursor=1000)],
            captured_at=T0,
        )
    with crash_on(wh_engine, "UPDATE tiktok.sync_state"), pytest.raises(RuntimeError, match="simulated crash"):
        warehouse.load_video_pages(
            result.sync,
            [ListedPage([make_video(i) for i in range(12, 16)], 2000), ListedPage([make_video(16)], 1000)],
            captured_at=T0,
        )
    assert sorted(rows(wh_engine, account)) == sorted(make_video(i)["id"] for i in range(12))
    assert seen_count(wh_engine, sync.sync_id) == 12
    after = sync_row(wh_engine, sync.sync_id)
    assert (after["cursor"], after["pages"], after["videos_seen"]) == (3000, 4, 12)
    with pytest.raises(ValueError, match="at least one page"):
        warehouse.load_video_pages(result.sync, [], captured_at=T0)


def test_a_bad_row_at_the_end_of_a_page_leaves_nothing(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    sync = warehouse.begin_sync(account, "full", now=T0)
    # The last row does not fit videos.height (int): the whole page is refused before anything is sent.
    page = [make_video(i) for i in range(5)] + [{"id": make_video(9)["id"], "duration": 2**31 - 1, "height": 2**31}]
    with pytest.raises(ValueError, match="height"):
        warehouse.load_video_page(sync, page, cursor=1, captured_at=T0)
    assert rows(wh_engine, account) == {}
    assert sync_row(wh_engine, sync.sync_id)["pages"] == 0


def test_a_crashed_sync_resumes_where_it_stopped_and_still_detects_removals(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    catalogue = [make_video(i) for i in range(6)]
    warehouse.upsert_videos(account, catalogue, captured_at=T0 - DAY)

    run1 = warehouse.begin_sync(account, "full", now=T0)
    assert not run1.resumed
    page1 = warehouse.load_video_page(run1, catalogue[:3], cursor=1_772_000_000_000, captured_at=T0)
    with crash_on(wh_engine, "UPDATE tiktok.sync_state"), pytest.raises(RuntimeError):
        warehouse.load_video_page(page1.sync, catalogue[3:5], cursor=1_771_000_000_000, captured_at=T0)
    # The worker died. Its retry resumes the same sync at the last committed page.

    later = T0 + timedelta(minutes=10)
    run2 = warehouse.begin_sync(account, "full", now=later)
    assert run2.resumed
    assert (run2.sync_id, run2.cursor, run2.pages, run2.videos_seen) == (run1.sync_id, 1_772_000_000_000, 1, 3)
    assert run2.started_at == run1.started_at
    page2 = warehouse.load_video_page(run2, catalogue[3:5], cursor=None, captured_at=later)
    assert (page2.sync.pages, page2.sync.videos_seen, page2.sync.cursor) == (2, 5, 1_772_000_000_000)
    finished = settle(warehouse, page2.sync, catalogue=catalogue, gone={catalogue[5]["id"]}, now=later)

    # Only the video neither run saw is a suspect: page 1's ids survived the crash in the database.
    # Left out for the first time, it is pending; a sync two hours later marks it.
    assert (finished.removal_suspects, finished.removals_pending, finished.removed) == (1, 1, 0)
    assert rows(wh_engine, account)[catalogue[5]["id"]]["missing_since"] == later
    assert seen_count(wh_engine, run1.sync_id) == 0  # dropped once finished
    assert not warehouse.begin_sync(account, "full", now=later).resumed
    assert full_sync(warehouse, account, [catalogue[:5]], later + 2 * HOUR, catalogue=catalogue[:5]) == 1
    stored = rows(wh_engine, account)
    assert [vid for vid, row in stored.items() if row["removed_at"]] == [catalogue[5]["id"]]
    assert stored[catalogue[5]["id"]]["removed_at"] == later + 2 * HOUR


def test_a_retry_remembers_the_unidentified_videos_of_an_earlier_try(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    """Audit item 5: the "no removals after an unidentifiable video" rule holds across tries."""
    catalogue = [make_video(i) for i in range(6)]
    warehouse.upsert_videos(account, catalogue, captured_at=T0 - DAY)

    first_try = warehouse.begin_sync(account, "full", now=T0)
    # Page 1 held catalogue[0..2] and two videos whose ids came back garbled (catalogue[3..4], say).
    page = warehouse.load_video_page(first_try, catalogue[:3], cursor=1_772_000_000_000, captured_at=T0, unidentified=2)
    assert page.sync.unidentified == 2
    with crash_on(wh_engine, "UPDATE tiktok.sync_state"), pytest.raises(RuntimeError):
        # Counted with its page: a page that is not committed adds nothing.
        warehouse.load_video_page(page.sync, [], cursor=1, captured_at=T0, unidentified=5)
    # The worker died; the retry is a new process that knows nothing of the first try.

    retry = warehouse.begin_sync(account, "full", now=T0 + timedelta(minutes=5))
    assert retry.resumed and retry.unidentified == 2
    retry = warehouse.load_video_page(retry, [catalogue[5]], cursor=None, captured_at=T0 + timedelta(minutes=5)).sync
    assert retry.unidentified == 2
    finished = warehouse.finish_sync(retry, now=T0 + timedelta(minutes=5))

    assert finished.removed == 0, "the garbled videos were met: none of the unnamed ones is taken for removed"
    assert all(row["removed_at"] is None for row in rows(wh_engine, account).values())
    assert sync_row(wh_engine, retry.sync_id)["unidentified"] == 2
    with pytest.raises(ValueError, match="negative"):
        warehouse.load_video_page(
            warehouse.begin_sync(account, "full", now=T0), [], cursor=None, captured_at=T0, unidentified=-1
        )


def test_begin_sync_keeps_modes_apart_and_validates(warehouse: Warehouse, account: str) -> None:
    full = warehouse.begin_sync(account, "full", now=T0)
    incremental = warehouse.begin_sync(account, "incremental", window_start=T0 - 7 * DAY, now=T0)
    assert full.sync_id != incremental.sync_id
    assert incremental.window_start_dt == T0 - 7 * DAY
    resumed = warehouse.begin_sync(account, "incremental", window_start=T0, now=T0 + DAY)
    assert resumed.resumed and resumed.window_start_dt == T0 - 7 * DAY  # the checkpoint's window wins
    with pytest.raises(ValueError, match="window_start"):
        warehouse.begin_sync(account, "incremental", now=T0)
    with pytest.raises(ValueError, match="no window_start"):
        warehouse.begin_sync(account, "full", window_start=T0, now=T0)
    with pytest.raises(ValueError, match="Unknown sync mode"):
        warehouse.begin_sync(account, "partial", now=T0)


def test_finish_is_idempotent_and_a_finished_sync_takes_no_pages(
    warehouse: Warehouse, account: str, make_video: Video
) -> None:
    sync = warehouse.begin_sync(account, "full", now=T0)
    page = warehouse.load_video_page(sync, [make_video(1)], cursor=None, captured_at=T0)
    first = warehouse.finish_sync(page.sync, now=T0)
    assert warehouse.finish_sync(page.sync, now=T0 + DAY) == first
    with pytest.raises(SyncNotActive, match="already finished"):
        warehouse.load_video_page(page.sync, [make_video(2)], cursor=None, captured_at=T0)


def test_results_are_json_able(warehouse: Warehouse, account: str, make_video: Video) -> None:
    sync = warehouse.begin_sync(account, "incremental", window_start=T0 - DAY, now=T0)
    page = warehouse.load_video_page(sync, [make_video(0)], cursor=12, captured_at=T0)
    listed = warehouse.end_listing(page.sync, now=T0)
    results = [
        sync,
        page,
        listed,
        warehouse.confirm_removals(listed, [make_video(0)["id"]], [make_video(0)], captured_at=T0),
        warehouse.finish_sync(page.sync, now=T0),
        warehouse.apply_video_query(account, [make_video(0)["id"], make_video(1)["id"]], [], captured_at=T0),
        warehouse.upsert_videos(account, [make_video(1)], captured_at=T0),
    ]
    for result in results:
        assert json.loads(json.dumps(asdict(result))) == asdict(result)
    assert SyncState(**asdict(sync)) == sync
    assert SyncState(**asdict(listed)) == listed


# -- removal ------------------------------------------------------------------------------------


def full_sync(
    warehouse: Warehouse,
    account: str,
    pages: list[list[dict[str, Any]]],
    now: datetime,
    *,
    catalogue: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> int:
    """A full sync that lists ``pages``; video/query returns the suspects found in ``catalogue``."""
    sync = warehouse.begin_sync(account, "full", now=now)
    for page in pages:
        sync = warehouse.load_video_page(sync, page, cursor=None, captured_at=now).sync
    return settle(warehouse, sync, catalogue=list(catalogue), now=now).removed


def test_full_sync_marks_unseen_videos_removed_and_restores_them_when_seen_again(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    catalogue = [make_video(i) for i in range(5)]
    assert full_sync(warehouse, account, [catalogue[:3], catalogue[3:]], T0) == 0
    # Video 1 disappears (deleted or made private); pages overlap at their boundary.
    pages = [[catalogue[0], catalogue[2]], [catalogue[2], *catalogue[3:]]]
    assert full_sync(warehouse, account, pages, T0 + DAY) == 0, "left out once: pending"
    assert rows(wh_engine, account)[catalogue[1]["id"]]["missing_since"] == T0 + DAY
    assert full_sync(warehouse, account, pages, T0 + DAY + 30 * MINUTE) == 0, "too soon for the second look"
    assert full_sync(warehouse, account, pages, T0 + DAY + HOUR) == 1, "left out again an hour later: removed"
    stored = rows(wh_engine, account)
    assert stored[catalogue[1]["id"]]["removed_at"] == T0 + DAY + HOUR
    assert stored[catalogue[1]["id"]]["missing_since"] == T0 + DAY
    assert all(stored[v["id"]]["removed_at"] is None for v in catalogue if v is not catalogue[1])
    # It comes back.
    assert full_sync(warehouse, account, [catalogue], T0 + 2 * DAY) == 0
    assert all(row["removed_at"] is None for row in rows(wh_engine, account).values())
    assert all(row["missing_since"] is None for row in rows(wh_engine, account).values())


def test_a_sync_that_loaded_no_page_removes_nothing(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    warehouse.upsert_videos(account, [make_video(1)], captured_at=T0)
    sync = warehouse.begin_sync(account, "full", now=T0 + DAY)
    finished = warehouse.finish_sync(warehouse.end_listing(sync, now=T0 + DAY), now=T0 + DAY)
    assert (finished.removal_suspects, finished.removed) == (0, 0)
    assert full_sync(warehouse, account, [[]], T0 + 2 * DAY) == 0  # one empty page: the account has none...
    assert full_sync(warehouse, account, [[]], T0 + 3 * DAY) == 1  # ...and still none a day later


def test_finish_marks_nothing_that_video_query_did_not_confirm(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    """Audit item 7: one listing is never enough to mark a video removed."""
    catalogue = [make_video(i) for i in range(30)]
    warehouse.upsert_videos(account, catalogue, captured_at=T0)
    sync = warehouse.begin_sync(account, "full", now=T0 + DAY)
    # A listing that ends early (an empty last page the API should not have sent, say).
    sync = warehouse.load_video_page(sync, catalogue[:5], cursor=None, captured_at=T0 + DAY).sync
    finished = warehouse.finish_sync(sync, now=T0 + DAY)  # nobody asked video/query
    assert (finished.removal_suspects, finished.removed, finished.suspects_unconfirmed) == (25, 0, 25)
    assert all(row["removed_at"] is None for row in rows(wh_engine, account).values())
    assert seen_count(wh_engine, sync.sync_id) == 0
    assert sync_row(wh_engine, sync.sync_id)["finished_at"] == T0 + DAY
    assert warehouse.finish_sync(sync, now=T0 + 2 * DAY) == finished


def test_video_query_confirms_suspects_live_or_gone(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    catalogue = [make_video(i) for i in range(30)]
    warehouse.upsert_videos(account, catalogue, captured_at=T0)
    later = T0 + DAY
    sync = warehouse.begin_sync(account, "full", now=later)
    sync = warehouse.load_video_page(sync, catalogue[:5], cursor=None, captured_at=later).sync
    sync = warehouse.end_listing(sync, now=later)
    suspects = warehouse.removal_suspects(sync)
    assert suspects == sorted(v["id"] for v in catalogue[5:]) and sync.removal_suspects == 25
    assert sync.listed_at == later.isoformat()
    with pytest.raises(SyncNotActive, match="has ended"):
        warehouse.load_video_page(sync, catalogue[5:6], cursor=None, captured_at=later)

    # video/query returns 24 of the 25 (with fresh counts): only the one it leaves out is gone.
    gone = catalogue[17]["id"]
    answer = [dict(v, view_count=5_000) for v in catalogue[5:] if v["id"] != gone]
    first = warehouse.confirm_removals(
        sync, suspects[:20], [v for v in answer if v["id"] in suspects[:20]], captured_at=later
    )
    assert (first.suspects, first.live, first.missing, first.updated) == (20, 19, 1, 19)
    assert first.snapshots_written == 19
    stored = rows(wh_engine, account)
    assert (stored[gone]["removed_at"], stored[gone]["missing_since"]) == (None, later), "one run: pending"
    assert all(stored[v["id"]]["view_count"] == 5_000 for v in answer if v["id"] in suspects[:20])
    assert warehouse.removal_suspects(sync) == suspects[20:], "answered suspects are settled in the checkpoint"
    # The same answer again (a retried call) changes nothing; ids that are not suspects are not judged.
    again = warehouse.confirm_removals(sync, [*suspects[:20], catalogue[0]["id"]], [], captured_at=later)
    assert (again.suspects, again.missing) == (0, 0)
    assert rows(wh_engine, account)[catalogue[0]["id"]]["missing_since"] is None

    finished = warehouse.finish_sync(sync, now=later)  # the last 5 suspects were never asked about
    assert (
        finished.removal_suspects,
        finished.removed,
        finished.suspects_live,
        finished.removals_pending,
        finished.suspects_unconfirmed,
    ) == (25, 0, 19, 1, 5)
    assert warehouse.finish_sync(sync, now=later + DAY) == finished
    assert not any(row["removed_at"] for row in rows(wh_engine, account).values())
    # The next day's sync: the listing is short again, video/query leaves the same video out.
    catalogue = [v for v in catalogue if v["id"] != gone]
    assert full_sync(warehouse, account, [catalogue[:5]], later + DAY, catalogue=catalogue) == 1
    assert [vid for vid, row in rows(wh_engine, account).items() if row["removed_at"]] == [gone]


def test_a_crash_between_listing_and_confirmation_loses_and_marks_nothing(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    catalogue = [make_video(i) for i in range(8)]
    warehouse.upsert_videos(account, catalogue, captured_at=T0)
    later = T0 + DAY
    sync = warehouse.begin_sync(account, "full", now=later)
    sync = warehouse.load_video_page(sync, catalogue[:4], cursor=None, captured_at=later).sync
    sync = warehouse.end_listing(sync, now=later)
    suspects = warehouse.removal_suspects(sync)
    assert len(suspects) == 4
    # The first answer is half applied when the worker dies: nothing of it stays.
    with crash_on(wh_engine, "UPDATE tiktok.sync_state"), pytest.raises(RuntimeError):
        warehouse.confirm_removals(sync, suspects, [catalogue[4], catalogue[5]], captured_at=later)
    assert all(row["removed_at"] is None for row in rows(wh_engine, account).values())

    # The retry resumes after the listing (no page is fetched again) with the same suspects.
    retry = warehouse.begin_sync(account, "full", now=later + timedelta(minutes=5))
    assert retry.resumed and retry.listed_at == later.isoformat() and retry.removal_suspects == 4
    assert warehouse.end_listing(retry, now=later + timedelta(minutes=5)) == retry  # idempotent
    assert warehouse.removal_suspects(retry) == suspects
    gone = {catalogue[6]["id"], catalogue[7]["id"]}
    finished = settle(warehouse, retry, catalogue=catalogue, gone=gone, now=later)
    assert (finished.removal_suspects, finished.removals_pending, finished.suspects_live) == (4, 2, 2)
    live = [v for v in catalogue if v["id"] not in gone]
    assert full_sync(warehouse, account, [catalogue[:4]], later + 2 * HOUR, catalogue=live) == 2
    removed = sorted(vid for vid, row in rows(wh_engine, account).items() if row["removed_at"])
    assert removed == sorted([catalogue[6]["id"], catalogue[7]["id"]])


def test_a_newer_sighting_beats_a_confirmation(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    catalogue = [make_video(i) for i in range(12)]
    warehouse.upsert_videos(account, catalogue, captured_at=T0)
    # Yesterday's cover refresh found videos 1 and 2 missing.
    warehouse.apply_video_query(account, [catalogue[1]["id"], catalogue[2]["id"]], [], captured_at=T0)
    sync = warehouse.begin_sync(account, "full", now=T0 + DAY)
    sync = warehouse.load_video_page(sync, [catalogue[0], *catalogue[3:]], cursor=None, captured_at=T0 + DAY).sync
    sync = warehouse.end_listing(sync, now=T0 + DAY)
    # A cover refresh that started later saw video 1 before this sync's confirmation was written.
    warehouse.apply_video_query(
        account, [catalogue[1]["id"]], [catalogue[1]], captured_at=T0 + DAY + timedelta(hours=1)
    )
    result = warehouse.confirm_removals(sync, warehouse.removal_suspects(sync), [], captured_at=T0 + DAY)
    assert result.missing == 2
    assert warehouse.finish_sync(sync, now=T0 + DAY).removed == 1
    stored = rows(wh_engine, account)
    assert stored[catalogue[1]["id"]]["removed_at"] is None
    assert stored[catalogue[2]["id"]]["removed_at"] == T0 + DAY


def test_incremental_sync_only_judges_its_window(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    catalogue = [make_video(i) for i in range(10)]  # video i was created i days before T0
    warehouse.upsert_videos(account, catalogue, captured_at=T0 - DAY)
    window_start = T0 - timedelta(days=4, hours=12)  # covers videos 0..4
    sync = warehouse.begin_sync(account, "incremental", window_start=window_start, now=T0)
    sync = warehouse.load_video_page(sync, [catalogue[0], catalogue[2], catalogue[4]], cursor=1, captured_at=T0).sync
    gone = {catalogue[1]["id"], catalogue[3]["id"]}
    result = settle(warehouse, sync, catalogue=catalogue, gone=gone, now=T0)
    assert (result.removal_suspects, result.removals_pending, result.removed) == (2, 2, 0)
    sync = warehouse.begin_sync(account, "incremental", window_start=window_start, now=T0 + 2 * HOUR)
    sync = warehouse.load_video_page(
        sync, [catalogue[0], catalogue[2], catalogue[4]], cursor=1, captured_at=T0 + 2 * HOUR
    ).sync
    result = settle(warehouse, sync, catalogue=catalogue, gone=gone, now=T0 + 2 * HOUR)
    assert (result.removal_suspects, result.removed) == (2, 2)
    removed = sorted(vid for vid, row in rows(wh_engine, account).items() if row["removed_at"])
    assert removed == sorted([catalogue[1]["id"], catalogue[3]["id"]])  # 5..9 are outside the window


def test_videos_first_seen_after_the_sync_started_are_not_judged(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    sync = warehouse.begin_sync(account, "full", now=T0)
    sync = warehouse.load_video_page(sync, [make_video(1)], cursor=None, captured_at=T0).sync
    # A concurrent load brings in a video posted after this sync read its pages.
    warehouse.upsert_videos(account, [make_video(2)], captured_at=T0 + timedelta(minutes=1))
    sync = warehouse.end_listing(sync, now=T0 + timedelta(minutes=2))
    assert warehouse.removal_suspects(sync) == []
    assert warehouse.finish_sync(sync, now=T0 + timedelta(minutes=2)).removed == 0


def test_video_query_refreshes_covers_and_marks_a_missing_id_removed_only_on_a_later_look(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video
) -> None:
    catalogue = [make_video(i) for i in range(8)]
    warehouse.upsert_videos(account, catalogue, captured_at=T0)
    later = T0 + timedelta(hours=5)
    fresh_cover = (
        f"https://p16-sign.tiktokcdn.com/obj/new.jpeg?x-expires={int((later + timedelta(hours=6)).timestamp())}"
    )
    returned = [
        {"id": catalogue[0]["id"], "cover_image_url": fresh_cover, "like_count": 1_000, "view_count": 9_000},
        {"id": catalogue[1]["id"], "cover_image_url": fresh_cover},
    ]
    requested = [v["id"] for v in catalogue[:3]]  # video 2 is requested but not returned
    result = warehouse.apply_video_query(account, requested, returned, captured_at=later)

    assert (result.requested, result.returned, result.updated, result.pending) == (3, 2, 2, 1)
    assert (result.missing, result.confirmed) == ([catalogue[2]["id"]], [])
    stored = rows(wh_engine, account)
    assert (stored[catalogue[2]["id"]]["removed_at"], stored[catalogue[2]["id"]]["missing_since"]) == (None, later)
    assert result.snapshots_written == 1  # only video 0 carried counts
    assert stored[catalogue[0]["id"]]["cover_image_url"] == fresh_cover
    assert stored[catalogue[0]["id"]]["cover_expires_at"] == later + timedelta(hours=6)
    assert (stored[catalogue[0]["id"]]["like_count"], stored[catalogue[0]["id"]]["title"]) == (
        1_000,
        catalogue[0]["title"],
    )
    # Left out again half an hour later: still pending (the clock keeps its first miss).
    soon = warehouse.apply_video_query(account, [catalogue[2]["id"]], [], captured_at=later + 30 * MINUTE)
    assert (soon.pending, soon.confirmed) == (0, [])
    assert warehouse.mark_removals(account, soon.confirmed, now=later + 30 * MINUTE).removed == 0
    # An hour after the first miss: confirmed, and marked.
    second = warehouse.apply_video_query(account, [catalogue[2]["id"]], [], captured_at=later + HOUR)
    assert second.confirmed == [catalogue[2]["id"]]
    marked = warehouse.mark_removals(account, second.confirmed, now=later + HOUR)
    assert (marked.removed, marked.held) == (1, 0)
    stored = rows(wh_engine, account)
    assert stored[catalogue[2]["id"]]["removed_at"] == later + HOUR
    assert all(stored[v["id"]]["removed_at"] is None for v in catalogue if v is not catalogue[2])  # not judged

    # Asked again and returned this time: restored, its pending clock cleared.
    again = warehouse.apply_video_query(account, [catalogue[2]["id"]], [catalogue[2]], captured_at=later + DAY)
    assert (again.updated, again.restored, again.missing) == (1, 1, [])
    assert (
        rows(wh_engine, account)[catalogue[2]["id"]]["removed_at"],
        rows(wh_engine, account)[catalogue[2]["id"]]["missing_since"],
    ) == (None, None)


def test_stale_cover_selection(warehouse: Warehouse, account: str, make_video: Video) -> None:
    def cover(hours: float) -> str:
        return f"https://p16-sign.tiktokcdn.com/obj/c.jpeg?x-expires={int((T0 + timedelta(hours=hours)).timestamp())}"

    videos = [
        make_video(0, cover_image_url=cover(10)),  # fresh
        make_video(1, cover_image_url=cover(1)),  # expires within the horizon
        make_video(2, cover_image_url=cover(-1)),  # already expired
        make_video(3, cover_image_url="https://p16-sign.tiktokcdn.com/obj/c.jpeg"),  # expiry unknown
        make_video(4, cover_image_url=cover(-1)),  # expired, but the video is gone
        make_video(5, cover_image_url=cover(2.5)),  # just outside the horizon
    ]
    warehouse.upsert_videos(account, videos, captured_at=T0)
    warehouse.apply_video_query(account, [videos[4]["id"]], [], captured_at=T0 + HOUR)
    confirmed = warehouse.apply_video_query(account, [videos[4]["id"]], [], captured_at=T0 + 2 * HOUR).confirmed
    assert warehouse.mark_removals(account, confirmed, now=T0 + 2 * HOUR).removed == 1
    stale = warehouse.stale_cover_video_ids(account, horizon=timedelta(hours=2), now=T0)
    assert stale == sorted(v["id"] for v in (videos[1], videos[2], videos[3]))
    wider = warehouse.stale_cover_video_ids(account, horizon=timedelta(hours=3), now=T0)
    assert wider == sorted(v["id"] for v in (videos[1], videos[2], videos[3], videos[5]))
    assert warehouse.stale_cover_video_ids(account, horizon=timedelta(hours=1), now=T0 + DAY) == sorted(
        v["id"] for v in videos if v is not videos[4]
    )


def test_when_not_every_cover_fits_the_most_recent_and_most_viewed_go_first(
    warehouse: Warehouse, account: str, make_video: Video
) -> None:
    expired = f"https://p16-sign.tiktokcdn.com/obj/c.jpeg?x-expires={int((T0 - HOUR).timestamp())}"
    fresh = f"https://p16-sign.tiktokcdn.com/obj/c.jpeg?x-expires={int((T0 + 10 * HOUR).timestamp())}"
    day = int(T0.timestamp()) // 86_400 * 86_400
    videos = [
        make_video(0, cover_image_url=fresh, create_time=day),  # newest, but its cover is fresh
        make_video(1, cover_image_url=expired, create_time=day - 10, view_count=5),
        make_video(2, cover_image_url=expired, create_time=day - 10, view_count=500),  # same day, more views
        make_video(3, cover_image_url=expired, create_time=day - 86_400 * 30, view_count=10**9),  # old hit
        make_video(4, cover_image_url=expired, create_time=day - 86_400 * 400, view_count=1),
    ]
    warehouse.upsert_videos(account, videos, captured_at=T0)
    ids = [v["id"] for v in videos]
    chosen, total = warehouse.stale_covers_by_priority(account, horizon=HOUR, now=T0, limit=3)
    assert (chosen, total) == ([ids[2], ids[1], ids[3]], 4)
    everything, total = warehouse.stale_covers_by_priority(account, horizon=HOUR, now=T0, limit=10)
    assert (everything, total) == ([ids[2], ids[1], ids[3], ids[4]], 4)
    assert warehouse.stale_covers_by_priority(account, horizon=HOUR, now=T0, limit=0) == ([], 4)
    assert sorted(everything) == warehouse.stale_cover_video_ids(account, horizon=HOUR, now=T0)


# -- profiles -----------------------------------------------------------------------------------


def test_profile_snapshot_is_daily_and_rewritten_only_on_change(
    warehouse: Warehouse, wh_engine: Engine, account: str
) -> None:
    user = {"follower_count": 10, "likes_count": 100, "display_name": "Creator", "is_verified": False}
    assert warehouse.upsert_profile_snapshot(account, user, captured_at=T0) is True
    assert warehouse.upsert_profile_snapshot(account, user, captured_at=T0 + timedelta(hours=1)) is False
    assert warehouse.upsert_profile_snapshot(account, {"follower_count": 11}, captured_at=T0 + timedelta(hours=2))
    assert warehouse.upsert_profile_snapshot(account, {}, captured_at=T0) is False
    assert warehouse.upsert_profile_snapshot(account, user, captured_at=T0 + DAY) is True
    with wh_engine.connect() as conn:
        found = conn.execute(
            text("SELECT * FROM tiktok.profile_snapshots WHERE open_id = :o ORDER BY snapshot_date"), {"o": account}
        ).all()
    assert [(r.snapshot_date, r.follower_count, r.likes_count, r.display_name) for r in found] == [
        (T0.date(), 11, 100, "Creator"),  # absent keys kept the morning's values
        ((T0 + DAY).date(), 10, 100, "Creator"),
    ]
    assert found[0].captured_at == T0 + timedelta(hours=2)


def test_account_profile_updates_present_keys_only(warehouse: Warehouse, wh_engine: Engine, account: str) -> None:
    def row() -> Any:
        with wh_engine.connect() as conn:
            return conn.execute(
                text(
                    "SELECT display_name, username, avatar_url, xmin::text AS xmin"
                    " FROM tiktok.accounts WHERE open_id = :o"
                ),
                {"o": account},
            ).one()

    warehouse.upsert_account_profile(account, {"display_name": "New\x00 Name", "follower_count": 5}, now=T0)
    first = row()
    assert (first.display_name, first.username) == ("New Name", "creator")
    warehouse.upsert_account_profile(account, {"display_name": "New Name"}, now=T0 + DAY)
    assert row().xmin == first.xmin  # unchanged: not rewritten
    warehouse.upsert_account_profile(account, {"avatar_url": "https://a/b.jpg", "username": None}, now=T0 + DAY)
    assert (row().avatar_url, row().username, row().display_name) == ("https://a/b.jpg", None, "New Name")


# -- drivers ------------------------------------------------------------------------------------


def test_loads_work_with_psycopg3(wh_engine_psycopg3: Engine, account: str, make_video: Video) -> None:
    """PostgresHook hands out psycopg 3 engines: COPY, JSON pages and row counts must work there too."""
    warehouse = Warehouse(wh_engine_psycopg3, removals=POLICY)
    batch = [make_video(i, title=f"t\t{i}\x00 🎉") for i in range(1500)]
    first = warehouse.upsert_videos(account, batch, captured_at=T0)
    assert (first.inserted, first.snapshots_written) == (1500, 1500)
    assert warehouse.upsert_videos(account, batch, captured_at=T0).unchanged == 1500
    sync = warehouse.begin_sync(account, "full", now=T0 + DAY)
    page = warehouse.load_video_page(sync, batch[:20], cursor=7, captured_at=T0 + DAY)
    assert (page.updated, page.snapshots_written, page.new_in_sync, page.sync.videos_seen) == (20, 20, 20, 20)
    gone = {v["id"] for v in batch[20:]}
    assert settle(warehouse, page.sync, catalogue=batch, gone=gone, now=T0 + DAY).removals_pending == 1480
    query = warehouse.apply_video_query(account, [batch[20]["id"], batch[21]["id"]], [batch[20]], captured_at=T0 + DAY)
    assert (query.updated, query.pending, query.confirmed) == (1, 0, [])  # 21 was already pending
    later = warehouse.begin_sync(account, "full", now=T0 + DAY + HOUR)
    later = warehouse.load_video_page(later, batch[:20], cursor=7, captured_at=T0 + DAY + HOUR).sync
    finished = settle(warehouse, later, catalogue=batch, gone=gone - {batch[20]["id"]}, now=T0 + DAY + HOUR)
    assert (finished.removed, finished.removals_held) == (0, 1479), "the share guard holds 1479 of 1500"
    assert warehouse.upsert_profile_snapshot(account, {"follower_count": 3}, captured_at=T0) is True
    with wh_engine_psycopg3.connect() as conn:
        title = conn.execute(text("SELECT title FROM tiktok.videos WHERE id = :i"), {"i": batch[3]["id"]}).scalar()
    assert title == "t\t3 🎉"


# -- audit 2, item 4: the share guard and the re-check list ----------------------------------------


def test_a_run_that_would_remove_too_large_a_share_of_an_account_marks_none(
    warehouse: Warehouse, wh_engine: Engine, account: str, make_video: Video, caplog: pytest.LogCaptureFixture
) -> None:
    catalogue = [make_video(i) for i in range(30)]
    warehouse.upsert_videos(account, catalogue, captured_at=T0)
    hidden = catalogue[20:]  # 10 of 30: an hour-long outage, or an account made private for a while
    live = catalogue[:20]
    for at in (T0 + DAY, T0 + DAY + HOUR):
        sync = warehouse.begin_sync(account, "full", now=at)
        sync = warehouse.load_video_page(sync, live, cursor=None, captured_at=at).sync
        with caplog.at_level("WARNING", logger="tiktok_warehouse.loads"):
            finished = settle(warehouse, sync, catalogue=live, now=at)
    assert (finished.removal_suspects, finished.removed, finished.removals_held) == (10, 0, 10)
    stored = rows(wh_engine, account)
    assert not any(row["removed_at"] for row in stored.values())
    assert all(stored[v["id"]]["missing_since"] == T0 + DAY for v in hidden), "still pending, for a later run"
    [warning] = [r.getMessage() for r in caplog.records if "removals_held" in r.getMessage()]
    assert account in warning and "10 of its 30 live videos" in warning and "runbook" in warning

    # The cover refresh's path holds the same way; a handful at once is marked.
    ids = [v["id"] for v in hidden]
    confirmed = warehouse.apply_video_query(account, ids, [], captured_at=T0 + DAY + 2 * HOUR).confirmed
    assert confirmed == sorted(ids)
    assert warehouse.mark_removals(account, confirmed, now=T0 + DAY + 2 * HOUR) == RemovalResult(removed=0, held=10)
    assert warehouse.mark_removals(account, confirmed[:5], now=T0 + DAY + 2 * HOUR) == RemovalResult(removed=5, held=0)
    assert sorted(vid for vid, row in rows(wh_engine, account).items() if row["removed_at"]) == sorted(ids)[:5]


def test_the_recheck_list_is_pending_removals_and_removals_of_the_last_week(
    warehouse: Warehouse, account: str, make_video: Video
) -> None:
    catalogue = [make_video(i) for i in range(6)]
    warehouse.upsert_videos(account, catalogue, captured_at=T0)
    ids = [v["id"] for v in catalogue]
    warehouse.apply_video_query(account, ids[:3], [], captured_at=T0 + HOUR)  # 0..2 pending
    confirmed = warehouse.apply_video_query(account, ids[:2], [], captured_at=T0 + 2 * HOUR).confirmed
    assert warehouse.mark_removals(account, confirmed, now=T0 + 2 * HOUR).removed == 2  # 0, 1 removed
    assert warehouse.removal_recheck_ids(account, now=T0 + 3 * HOUR) == sorted(ids[:3])
    assert warehouse.removal_recheck_ids(account, now=T0 + 8 * DAY) == [ids[2]], "a week on: only the pending one"
    warehouse.apply_video_query(account, [ids[2]], [catalogue[2]], captured_at=T0 + 8 * DAY)
    assert warehouse.removal_recheck_ids(account, now=T0 + 8 * DAY) == []
