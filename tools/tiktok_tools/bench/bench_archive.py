"""Bench figures of issue 16: cover archive throughput, and the API calls early history costs.

- **Archive throughput** (local folder): covers per second of a first run over ``covers`` videos
  (download from the simulator's CDN, SHA-256, write through ObjectStoragePath, record in the
  warehouse), and of a second run over the refreshed URLs (conditional requests: 304, nothing
  downloaded); plus the bytes each run downloaded.
- **API calls spent on early history**: the captures come from the answers a cover refresh already
  gets. The simulator's request counters are read after the refresh's ``video/query`` calls and
  again after :func:`tiktok_warehouse.history.record_captures` kept the captures: the difference
  is the extra API calls (target 0).

:func:`fig_archive` has the shape of the figures in :mod:`tiktok_tools.bench.__main__` (``(result, rows)``
from a ``Bench``); :func:`measure` does the work with plain arguments, for tests.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _total_requests(sim: Any) -> int:
    stats = sim.admin.stats()
    return sum(e["requests"] for name, e in stats["endpoints"].items() if not name.startswith("cdn_"))


def measure(engine: Any, sim: Any, hook: Any, open_id: str, *, workdir: Path | None = None) -> dict[str, Any]:
    """Archive every cover of ``open_id`` twice and record its captures; return the numbers."""
    from tiktok_pipeline.archive import ArchiveSettings, CoverArchiver, cover_items
    from tiktok_warehouse.history import record_captures

    ids = sim.admin.video_ids(open_id)
    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        settings = ArchiveSettings(base=f"file://{folder}/covers", pace_seconds=0)
        archiver = CoverArchiver(engine, settings, api_url=hook.config.base_url)  # as the operators do
        runs = []
        for _run in range(2):
            # What the cover refresh does: video/query for the ids, 20 a call ...
            before = _total_requests(sim)
            answers = [videos for _batch, videos in hook.query_videos(open_id, ids)]
            api_calls = _total_requests(sim) - before
            now = datetime.now(UTC)
            # ... then the early history from those answers (no request of its own) ...
            before = _total_requests(sim)
            captured = 0
            with engine.begin() as conn:
                for videos in answers:
                    captured += record_captures(conn, open_id, videos, now, "query", young_days=100_000)
            history_calls = _total_requests(sim) - before
            # ... and the archive of their covers.
            items = [item for videos in answers for item in cover_items(open_id, videos)]
            started = time.perf_counter()
            result = archiver.archive(items, now=now)
            seconds = time.perf_counter() - started
            runs.append(
                {
                    "covers": len(items),
                    "seconds": round(seconds, 3),
                    "covers_per_second": round(len(items) / seconds, 1) if seconds else None,
                    "query_calls": api_calls,
                    "captures": captured,
                    "history_api_calls": history_calls,
                    **result.summary(),
                }
            )
            time.sleep(0.01)  # two captures never share a timestamp
    first, second = runs
    return {
        "covers": first["covers"],
        "first_run": first,
        "second_run": second,
        "covers_per_second": first["covers_per_second"],
        "covers_per_second_unchanged": second["covers_per_second"],
        "second_run_downloads": second["downloaded"],
        "history_api_calls": first["history_api_calls"] + second["history_api_calls"],
    }


def fig_archive(b: Any, covers: int | None = None) -> tuple[dict[str, Any], list[Any]]:
    """The figure for ``make bench`` (``b`` is a :class:`tiktok_tools.bench.__main__.Bench`)."""
    from tiktok_tools.bench.__main__ import Row, connect_accounts, reset_warehouse

    covers = covers or (200 if b.quick else 1000)
    reset_warehouse(b)
    [open_id] = connect_accounts(b, [covers])
    result = measure(b.engine, b.sim, b.hook, open_id, workdir=b.workdir)
    first = result["first_run"]
    rows = [
        Row(
            "A",
            "cover archive, local folder: covers/s, first run",
            f"{covers:,} covers, {first['bytes_downloaded']:,} bytes in {first['seconds']} s",
            f"{result['covers_per_second']}",
        ),
        Row(
            "",
            "cover archive: downloads of a second run (unchanged covers)",
            f"{result['second_run']['not_modified']:,} answered 304, {result['covers_per_second_unchanged']} covers/s",
            f"{result['second_run_downloads']}",
            "= 0",
            result["second_run_downloads"] == 0,
        ),
        Row(
            "",
            "API calls spent on early history",
            f"{result['first_run']['captures'] + result['second_run']['captures']:,} captures kept "
            f"from {result['first_run']['query_calls'] + result['second_run']['query_calls']} video/query answers",
            f"{result['history_api_calls']}",
            "= 0",
            result["history_api_calls"] == 0,
        ),
    ]
    return result, rows
