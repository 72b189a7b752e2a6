"""Where removals are decided: which videos a run may take for removed, and when it asks TikTok again.

The rules, in one place (the warehouse runs the SQL; the decision is made here):

* The listing's window is the sync's *stored* window: a resumed sync stops where it started to
  judge, never at a later run's window (:mod:`tiktok_pipeline.sync`).
* A listing that met a video without a usable id names no suspect (the warehouse's ``end_listing``
  counts them in ``unidentified``): that video and its page would be taken for deleted.
* A suspect is marked removed only when ``video/query`` leaves it out too, and only if it was
  already missing ``POLICY.confirm_after`` (one hour) earlier, in an earlier run -- else it is
  pending, for a later run.
* The share guard: a run never marks more than ``POLICY.hold_share`` (20%) of an account's live
  videos when that is more than ``POLICY.hold_min`` (5); those are held, with a warning.
* The cover refresh asks again about pending removals and about videos marked removed in the last
  ``POLICY.recheck`` (7 days): one wrongly marked comes back.

The warehouse (``tiktok_warehouse.loads``) runs these numbers in its SQL, given :data:`POLICY`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tiktok_provider.fields import VIDEO_FIELDS
from tiktok_provider.paginator import QUERY_BATCH

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tiktok_provider.hooks.tiktok import TikTokDisplayHook
    from tiktok_warehouse.loads import SyncState, Warehouse


@dataclass(frozen=True)
class RemovalPolicy:
    """The numbers of the removal rules above (the warehouse's ``RemovalRules``)."""

    #: A video is marked removed only when it is left out again at least this long after it first
    #: was (``videos.missing_since``): in a later run, never in the one that first missed it.
    confirm_after: timedelta = timedelta(hours=1)
    #: One run marks no removals of an account when they would be more than this share of its live
    #: videos and more than ``hold_min`` videos: an outage looks like that, creators rarely do.
    hold_share: float = 0.2
    hold_min: int = 5
    #: The cover refresh asks video/query again about videos marked removed this recently.
    recheck: timedelta = timedelta(days=7)

    def holds(self, confirmed: int, live: int) -> bool:
        """The share guard: whether one run's ``confirmed`` removals are too many to mark."""
        return confirmed > self.hold_min and confirmed > self.hold_share * live

    def hold_rule(self) -> str:
        return f"{round(self.hold_share * 100)}%"


POLICY = RemovalPolicy()


def listed_in_an_earlier_run(sync: SyncState, context: Any, now: datetime) -> bool:
    """Whether the resumed sync's listing ended before this DAG run started (not in an earlier try of it).

    A listing that ended an hour or more ago counts as earlier too (a run without a start date).
    """
    listed_at = datetime.fromisoformat(sync.listed_at)
    dag_run = context.get("dag_run") if context else None
    run_started = getattr(dag_run, "start_date", None)
    return (run_started is not None and listed_at < run_started) or listed_at <= now - POLICY.confirm_after


def confirm_listing_suspects(
    hook: TikTokDisplayHook, warehouse: Warehouse, sync: SyncState, *, now: datetime, log: Any
) -> dict[str, int]:
    """Ask ``video/query`` about what the listing should have met but did not; store its answers.

    Returns the snapshot rows and young-video captures its answers wrote.
    """
    written = {"snapshots_written": 0, "captures": 0}
    suspects = warehouse.removal_suspects(sync)
    if not suspects:
        return written
    log.info(
        "%d videos of %s were not in the listing; asking video/query about them (%d calls) before marking any removed",
        len(suspects),
        sync.open_id,
        math.ceil(len(suspects) / QUERY_BATCH),
    )
    for batch, videos in hook.query_videos(sync.open_id, suspects, fields=VIDEO_FIELDS):
        answer = warehouse.confirm_removals(sync, batch, videos, captured_at=now)
        written["snapshots_written"] += answer.snapshots_written
        written["captures"] += answer.captures
    return written


@dataclass
class CoverRefresh:
    """What one cover refresh did: asked, updated, restored, and its removal verdicts."""

    requested: int = 0
    updated: int = 0
    restored: int = 0
    pending: int = 0
    missing: int = 0
    rechecked: list[str] = field(default_factory=list)
    removed: int = 0
    held: int = 0
    snapshots_written: int = 0
    captures: int = 0
    #: Stale covers over the run's cap, left for a later run (the least recent, least viewed).
    left: int = 0
    #: The video objects video/query returned (their covers go to the archive).
    answers: list[Any] = field(default_factory=list)


def refresh_covers(
    hook: TikTokDisplayHook,
    warehouse: Warehouse,
    open_id: str,
    *,
    video_ids: Sequence[str] | None,
    horizon: timedelta,
    now: datetime,
    max_covers: int | None = None,
) -> CoverRefresh:
    """Query stale covers plus pending and recent removals; mark removals only with every answer in hand.

    ``max_covers``: at most this many stale covers (the most recent uploads, then the most viewed);
    the rest are counted in ``left`` for a later run. Pending and recent removals are always asked.
    """
    done = CoverRefresh()
    confirmed: list[str] = []
    if video_ids is not None:
        ids = list(video_ids)
    else:
        if max_covers is None:
            stale = warehouse.stale_cover_video_ids(open_id, horizon=horizon, now=now)
        else:
            stale, total = warehouse.stale_covers_by_priority(open_id, horizon=horizon, now=now, limit=max_covers)
            done.left = total - len(stale)
        done.rechecked = warehouse.removal_recheck_ids(open_id, now=now)
        ids = sorted(set(stale) | set(done.rechecked))
    for batch, videos in hook.query_videos(open_id, ids, fields=VIDEO_FIELDS):
        result = warehouse.apply_video_query(open_id, batch, videos, captured_at=now)
        done.requested += len(batch)
        done.updated += result.updated
        done.restored += result.restored
        done.missing += len(result.missing)
        done.pending += result.pending
        confirmed += result.confirmed
        done.snapshots_written += result.snapshots_written
        done.captures += result.captures
        done.answers.extend(videos)
    # Marked only now, with every answer in hand: the share guard judges the run as a whole.
    judged = warehouse.mark_removals(open_id, confirmed, now=now)
    done.removed, done.held = judged.removed, judged.held
    return done
