"""
Benchmark the warehouse's bulk video upsert against a plain COPY of the same rows.

Measures, in one run and on a database it creates and drops itself:

* ``copy``: the rows rendered in COPY's text format (by the same renderer the upsert uses) and
  COPYed into an unindexed temporary table: the floor;
* ``upsert_empty``: ``Warehouse.upsert_videos`` into an empty ``videos`` table (with its
  snapshots, indexes and foreign keys);
* ``upsert_unchanged``: the same call again with the same rows (nothing may be rewritten);
* ``indexed_copy``: the very rows the fresh upsert left in every table it wrote (``videos``,
  ``video_snapshots``, ...), COPYed back into those same, emptied, indexed tables with their
  foreign keys: the fairer floor (already rendered, so it is harsher on the upsert still);

and prints each upsert as a ratio to ``copy`` (target: at most 2x), and the fresh upsert as a ratio
to ``indexed_copy`` (target: at most 1.5x). Each figure is the median of
``--repeat`` runs, with a CHECKPOINT before each timed step so WAL flushing from one step does not
land in the next.

Usage::

    python tools/tiktok_tools/bench/bench_loads.py [--quick] [--rows N] [--repeat K] [--json PATH]
                                [--server postgresql://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url

try:
    import tiktok_warehouse  # noqa: F401  (installed, or on the path)
except ImportError:  # a plain checkout: include/ is where the package lives
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "include"))

from tiktok_warehouse import migrate
from tiktok_warehouse.loads import VIDEO_FIELDS, Warehouse, copy_data, copy_from
from tiktok_warehouse.tokens import TokenGrant, TokenStore

FULL_ROWS = 100_000
QUICK_ROWS = 5_000
BASELINE_COLUMNS = ("id", *VIDEO_FIELDS)
BASELINE_TYPES = {
    "id": "text",
    "create_time": "bigint",
    "duration": "integer",
    "height": "integer",
    "width": "integer",
    "like_count": "bigint",
    "comment_count": "bigint",
    "share_count": "bigint",
    "view_count": "bigint",
}
WORDS = ["dance", "recipe", "vlog", "tutorial", "cat", "trend", "duet", "stitch", "day", "life", "#fyp", "✨", "🎉"]


def make_videos(count: int, *, seed: int = 42) -> list[dict[str, Any]]:
    """Return ``count`` video objects shaped like the API's, sizes included (embed_html ~ 900 chars)."""
    rnd = random.Random(seed)
    now = int(time.time())
    videos = []
    for i in range(count):
        video_id = str(7_300_000_000_000_000_000 + i * 7919)
        title = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(2, 20)))[:150]
        description = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(5, 30)))[:150]
        share_url = f"https://www.tiktok.com/@creator/video/{video_id}"
        videos.append(
            {
                "id": video_id,
                "create_time": now - i * 3600,
                "title": title,
                "video_description": description,
                "duration": rnd.randint(5, 600),
                "height": 1920,
                "width": 1080,
                "share_url": share_url,
                "embed_link": f"https://www.tiktok.com/embed/v2/{video_id}",
                "embed_html": (
                    f'<blockquote class="tiktok-embed" cite="{share_url}" data-video-id="{video_id}" '
                    f'style="max-width: 605px;min-width: 325px;"><section><a target="_blank" '
                    f'title="@creator" href="https://www.tiktok.com/@creator">@creator</a> {description} '
                    f'<a target="_blank" title="♬ original sound" href="https://www.tiktok.com/music/'
                    f'original-sound-{video_id}">♬ original sound - creator</a></section></blockquote> '
                    f'<script async src="https://www.tiktok.com/embed.js"></script>'
                ),
                "cover_image_url": (
                    f"https://p16-sign-va.tiktokcdn.com/obj/tos-maliva-p-0068/{uuid.UUID(int=rnd.getrandbits(128)).hex}"
                    f"?x-expires={now + 6 * 3600}&x-signature={uuid.UUID(int=rnd.getrandbits(128)).hex}%3D"
                ),
                "like_count": rnd.randint(0, 10**7),
                "comment_count": rnd.randint(0, 10**5),
                "share_count": rnd.randint(0, 10**5),
                "view_count": rnd.randint(0, 10**9),
            }
        )
    return videos


def plain_copy(engine: Engine, videos: Sequence[dict[str, Any]]) -> float:
    """Time rendering ``videos`` for COPY and COPYing them into an unindexed temporary table."""
    ddl = ", ".join(f"{name} {BASELINE_TYPES.get(name, 'text')}" for name in BASELINE_COLUMNS)
    with engine.connect() as conn:
        conn.execute(text(f"CREATE TEMPORARY TABLE bench_plain_copy ({ddl}) ON COMMIT DROP"))
        start = time.perf_counter()
        columns = [[video.get(name) for video in videos] for name in BASELINE_COLUMNS]
        copy_from(conn, "bench_plain_copy", BASELINE_COLUMNS, copy_data(columns))
        conn.commit()
        return time.perf_counter() - start


#: The tables a fresh upsert writes, in foreign-key order (those it left empty are skipped).
UPSERT_TABLES = ("videos", "video_snapshots", "video_captures")


def dump_tables(engine: Engine) -> dict[str, bytes]:
    """The rows of each table the upsert wrote, in COPY's text format."""
    import io

    dumps: dict[str, bytes] = {}
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for table in UPSERT_TABLES:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"tiktok.{table}",))
            if not cur.fetchone()[0]:
                continue
            buf = io.BytesIO()
            cur.copy_expert(f"COPY tiktok.{table} TO STDOUT", buf)
            if buf.tell():
                dumps[table] = buf.getvalue()
        raw.commit()
    finally:
        raw.close()
    return dumps


def indexed_copy(engine: Engine, dumps: dict[str, bytes]) -> float:
    """Time COPYing ``dumps`` back into the same (emptied) indexed tables, in one transaction."""
    import io

    with engine.begin() as conn:
        conn.execute(text("TRUNCATE " + ", ".join(f"tiktok.{t}" for t in dumps)))
    checkpoint(engine)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        start = time.perf_counter()
        for table, data in dumps.items():
            cur.copy_expert(f"COPY tiktok.{table} FROM STDIN", io.BytesIO(data))
        raw.commit()
        return time.perf_counter() - start
    finally:
        raw.close()


class StatementClock:
    """Adds up the time spent in SQL statements (the merges; COPY goes around SQLAlchemy)."""

    def __init__(self, engine: Engine) -> None:
        self.total = 0.0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, *args: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn: Any, *args: Any) -> None:
        self.total += time.perf_counter() - conn.info.pop("bench_started")

    def reset(self) -> float:
        total, self.total = self.total, 0.0
        return total


def timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def checkpoint(engine: Engine) -> None:
    """Flush dirty buffers so one step's writes are not paid for by the next (needs superuser)."""
    with engine.connect() as conn:
        if conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar():
            conn.execute(text("CHECKPOINT"))


def run(engine: Engine, count: int, repeat: int) -> dict[str, Any]:
    migrate.upgrade(engine)
    open_id = "bench-account"
    TokenStore(engine, Fernet.generate_key().decode()).save_grant(
        TokenGrant(
            open_id=open_id,
            access_token="act.bench",
            expires_in=7200,
            refresh_token="rft.bench",
            refresh_expires_in=86400,
            scopes=frozenset({"video.list"}),
            obtained_at=datetime.now(UTC),
        )
    )
    warehouse = Warehouse(engine)
    videos = make_videos(count)
    captured_at = datetime.now(UTC)
    clock = StatementClock(engine)
    figures: dict[str, list[float]] = {
        key: [] for key in ("copy", "empty", "empty_sql", "unchanged", "unchanged_sql", "indexed_copy")
    }
    for _ in range(repeat):
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE tiktok.videos, tiktok.video_snapshots"))
        checkpoint(engine)
        figures["copy"].append(plain_copy(engine, videos))
        checkpoint(engine)
        clock.reset()
        figures["empty"].append(timed(lambda: warehouse.upsert_videos(open_id, videos, captured_at=captured_at)))
        figures["empty_sql"].append(clock.reset())
        checkpoint(engine)
        clock.reset()
        result = None

        def again() -> None:
            nonlocal result
            result = warehouse.upsert_videos(open_id, videos, captured_at=captured_at)

        figures["unchanged"].append(timed(again))
        figures["unchanged_sql"].append(clock.reset())
        assert result is not None and result.unchanged == count, result
        dumps = dump_tables(engine)
        figures["indexed_copy"].append(indexed_copy(engine, dumps))
    median = {key: statistics.median(values) for key, values in figures.items()}
    return {
        "rows": count,
        "repeat": repeat,
        "copy_s": round(median["copy"], 4),
        "upsert_empty_s": round(median["empty"], 4),
        "upsert_unchanged_s": round(median["unchanged"], 4),
        "upsert_empty_ratio": round(median["empty"] / median["copy"], 2),
        "upsert_unchanged_ratio": round(median["unchanged"] / median["copy"], 2),
        "indexed_copy_s": round(median["indexed_copy"], 4),
        "indexed_copy_tables": list(dumps),
        "upsert_empty_indexed_ratio": round(median["empty"] / median["indexed_copy"], 2),
        # Time inside the upsert's SQL statements (INSERT ... ON CONFLICT into videos and snapshots);
        # the rest is staging in Python and the COPY into the temporary table.
        "upsert_empty_sql_s": round(median["empty_sql"], 4),
        "upsert_unchanged_sql_s": round(median["unchanged_sql"], 4),
        "runs": {key: [round(v, 4) for v in values] for key, values in figures.items()},
        "python": platform.python_version(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS} rows instead of {FULL_ROWS}")
    parser.add_argument("--rows", type=int, help="number of videos (overrides --quick)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is reported")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--server",
        default="postgresql://postgres@127.0.0.1:5432",
        help="Postgres server (a role allowed to CREATE DATABASE); a scratch database is made there",
    )
    args = parser.parse_args(argv)
    count = args.rows or (QUICK_ROWS if args.quick else FULL_ROWS)

    server = make_url(args.server)
    database = f"tiktok_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(server.set(drivername="postgresql", database="postgres").render_as_string(False))
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{database}"')
    engine = create_engine(server.set(drivername="postgresql+psycopg2", database=database))
    try:
        figures = run(engine, count, args.repeat)
    finally:
        engine.dispose()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()

    print(f"{figures['rows']} videos, median of {figures['repeat']} runs")
    print(f"  plain COPY into an unindexed temp table  {figures['copy_s']:8.3f} s   1.00x")
    for label, key in (("into an empty table", "empty"), ("again, unchanged", "unchanged")):
        print(
            f"  upsert_videos {label:<26} {figures[f'upsert_{key}_s']:8.3f} s   {figures[f'upsert_{key}_ratio']:.2f}x"
            f"   (SQL statements {figures[f'upsert_{key}_sql_s']:.3f} s)"
        )
    print(
        f"  COPY of the same rows into the same indexed tables {figures['indexed_copy_s']:8.3f} s; "
        f"fresh upsert ÷ it {figures['upsert_empty_indexed_ratio']:.2f}x (target <= 1.5)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
