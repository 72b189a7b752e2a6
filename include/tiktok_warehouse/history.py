"""Keep the first days of every video: each capture of a young video, with its time.

The backfill (``video/list`` pages) and the cover refresh (``video/query``, about four times a
day per video) already receive every video's counts; :func:`record_captures` keeps the ones of
videos younger than ``young_days`` (``[tiktok] early_history_days``, default 14) in
``tiktok.video_captures``. No API call is made for it.

The views built on it (migration 0010):

- ``tiktok.video_early_metrics``: one row per video and mark (1h, 6h, 24h, 7d, 28d after posting)
  with the observation -- a capture, or a daily snapshot from ``video_snapshots`` -- nearest to
  the mark, its actual ``age`` / ``age_hours`` and its counts. Only observations within a
  tolerance of the mark count: +-1 h for 1h, +-3 h for 6h, +-6 h for 24h, +-1 day for 7d,
  +-3 days for 28d (:data:`MARKS`); with none, the mark has no row rather than a far-off value.
  The 28d mark comes from the daily snapshots (captures stop at ``young_days``).
- ``tiktok.account_early_medians``: per account and mark, the median counts and median age.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from tiktok_warehouse.tables import CAPTURE_SOURCES

#: The airflow.cfg section and option of the age limit, and its default.
CONFIG_SECTION = "tiktok"
YOUNG_DAYS_OPTION = "early_history_days"
DEFAULT_YOUNG_DAYS = 14
#: mark -> (age after posting, tolerance), as in the view ``video_early_metrics``.
MARKS: dict[str, tuple[timedelta, timedelta]] = {
    "1h": (timedelta(hours=1), timedelta(hours=1)),
    "6h": (timedelta(hours=6), timedelta(hours=3)),
    "24h": (timedelta(hours=24), timedelta(hours=6)),
    "7d": (timedelta(days=7), timedelta(days=1)),
    "28d": (timedelta(days=28), timedelta(days=3)),
}

_COUNTS = ("view_count", "like_count", "comment_count", "share_count")

_INSERT = text(
    """
    INSERT INTO tiktok.video_captures
        (video_id, captured_at, open_id, create_time, view_count, like_count, comment_count, share_count, source)
    SELECT r.id, :captured_at, :open_id, to_timestamp(r.create_time),
           r.view_count, r.like_count, r.comment_count, r.share_count, :source
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
        AS r(id text, create_time bigint,
             view_count bigint, like_count bigint, comment_count bigint, share_count bigint)
    WHERE r.id IS NOT NULL
      AND r.create_time IS NOT NULL
      AND to_timestamp(r.create_time) <= :captured_at
      AND to_timestamp(r.create_time) > CAST(:captured_at AS timestamptz) - make_interval(days => :young_days)
    ON CONFLICT (video_id, captured_at) DO NOTHING
    """
)


def young_days_setting() -> int:
    """Return ``[tiktok] early_history_days`` (default 14); 0 turns the history off."""
    from airflow.configuration import conf

    raw = (conf.get(CONFIG_SECTION, YOUNG_DAYS_OPTION, fallback="") or "").strip()
    if not raw:
        return DEFAULT_YOUNG_DAYS
    days = int(raw)
    if not 0 <= days <= 365:
        raise ValueError(f"[{CONFIG_SECTION}] {YOUNG_DAYS_OPTION} must be between 0 and 365, got {days}")
    return days


def _number(value: Any) -> int | None:
    # Counts are int32/int64 in the contract; anything else (a string, a bool, a float) is not kept.
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def record_captures(
    conn: Connection,
    open_id: str,
    rows: Iterable[Mapping[str, Any]],
    captured_at: datetime,
    source: str,
    young_days: int = DEFAULT_YOUNG_DAYS,
) -> int:
    """Keep the counts of the videos in ``rows`` posted within ``young_days`` before ``captured_at``.

    ``rows`` are video objects as the API returns them (``id``, ``create_time`` in Unix seconds,
    the four counts); those without an id or create_time are skipped. One INSERT ... SELECT, none
    when no video is young; a retried task (same ``captured_at``) inserts nothing twice. Returns
    the rows inserted.
    """
    if source not in CAPTURE_SOURCES:
        raise ValueError(f"source must be one of {CAPTURE_SOURCES}, got {source!r}")
    if captured_at.tzinfo is None:
        raise ValueError("captured_at must be timezone-aware")
    if young_days <= 0:
        return 0
    # Only videos that may be young travel (the SQL keeps exactly those within young_days): a
    # backfill's pages of older videos cost no statement. A day of slack either side of the window.
    newest = captured_at.timestamp() + 86_400
    oldest = captured_at.timestamp() - (young_days + 1) * 86_400
    payload = [
        {
            "id": row["id"],
            "create_time": create_time,
            **{name: _number(row.get(name)) for name in _COUNTS},
        }
        for row in rows
        if isinstance(row.get("id"), str)
        and (create_time := _number(row.get("create_time"))) is not None
        and oldest <= create_time <= newest
    ]
    if not payload:
        return 0
    result = conn.execute(
        _INSERT,
        {
            "rows": json.dumps(payload),
            "captured_at": captured_at,
            "open_id": open_id,
            "source": source,
            "young_days": young_days,
        },
    )
    return result.rowcount
