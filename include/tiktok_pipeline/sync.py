"""What a video-list run does for one account: its window, resuming, paging into the warehouse.

``mode="full"`` walks the whole history, committing the cursor with every page, so a retry after a
crash resumes from the last committed page. ``mode="incremental"`` walks newest first until it
passes ``lookback_days`` (a resumed sync: the window it started with). What the walk should have
met but did not is handed to :mod:`tiktok_pipeline.removals`.

**Prefetch, and what a crash costs.** While one page is being written, the next is fetched in a
background thread (:func:`prefetched`: one page ahead at most, one request in flight per hook).
A page's cursor is committed in the same transaction as its rows, and a page is never skipped: a
crash (or SIGKILL) at any point costs **0 pages lost and at most 2 pages re-requested** -- the
page being written when it died (its transaction rolls back) and the one prefetched behind it;
the retry resumes at the last committed cursor and fetches them again. (Without prefetch it was
at most 1: overlapping the next request with the current write costs one page more.) An
incremental walk does not prefetch past its window, so it asks for no page more than before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from tiktok_pipeline.removals import confirm_listing_suspects, listed_in_an_earlier_run
from tiktok_provider.fields import VIDEO_FIELDS

if TYPE_CHECKING:
    from tiktok_provider.hooks.tiktok import TikTokDisplayHook
    from tiktok_warehouse.loads import Warehouse

#: How the warehouse names a sync (``tiktok.sync_state.mode``).
MODES = ("full", "incremental")
#: What the DAG's ``mode`` param and the operator take, and the warehouse's name for each. Not
#: "backfill"/"full": Airflow's own *Backfill* (a date range of runs) is something else.
RUN_MODES = {"recent": "incremental", "whole_history": "full"}
#: The old names, still accepted (with a deprecation note in the log).
OLD_RUN_MODES = {"incremental": "recent", "full": "whole_history"}


def run_mode(value: str, *, log: Any = None) -> str:
    """The warehouse's sync mode for a ``mode`` argument; ValueError for one it does not know."""
    if value in OLD_RUN_MODES:
        if log is not None:
            log.warning(
                "mode=%r is deprecated; use mode=%r (same meaning). %r will stop being accepted in a later release.",
                value,
                OLD_RUN_MODES[value],
                value,
            )
        value = OLD_RUN_MODES[value]
    if value not in RUN_MODES:
        raise ValueError(f"mode must be one of {sorted(RUN_MODES)}, got {str(value)[:80]!r}")
    return RUN_MODES[value]


T = TypeVar("T")
_END = object()


def prefetched(items: Iterable[T], *, fetch_next: Callable[[T], bool] = lambda item: True) -> Iterator[T]:
    """Yield ``items`` while the next one is produced in a background thread, one item ahead at most.

    The source iterator only ever runs in that one thread, one ``next()`` at a time, so a hook
    behind it has one request in flight; its errors are raised here, in the caller's thread, when
    the caller asks for the item that failed. ``fetch_next(item)`` false: nothing more is fetched
    after ``item`` (an incremental walk past its window). When the caller stops early (break or an
    exception), the request under way is waited for -- nothing is left running that could use the
    hook alongside the caller -- and the source is closed.
    """
    source = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiktok-prefetch") as pool:
        try:
            future = pool.submit(next, source, _END)
            while True:
                item = future.result()
                if item is _END:
                    return
                more = fetch_next(item)
                if more:
                    future = pool.submit(next, source, _END)
                yield item
                if not more:
                    return
        finally:
            pool.shutdown(wait=True)
            close = getattr(source, "close", None)
            if close is not None:
                close()


def requested_window(mode: str, lookback_days: int, now: datetime) -> datetime | None:
    """The oldest upload time an incremental run looks at; None for a full run (the whole history)."""
    return now - timedelta(days=lookback_days) if mode == "incremental" else None


def sync_videos(
    hook: TikTokDisplayHook,
    warehouse: Warehouse,
    open_id: str,
    *,
    mode: str,
    lookback_days: int,
    context: Any,
    now: datetime,
    log: Any,
) -> dict[str, Any]:
    """Run (or resume) one account's sync: list its videos into the warehouse, then judge its suspects.

    A sync resumed from an earlier run whose listing had already ended (its video/query kept
    failing) is finished at once -- its unanswered suspects are handed on -- and a fresh listing
    starts, so a failing video/query never holds back new videos.
    """
    window = requested_window(mode, lookback_days, now)
    loaded = {"inserted": 0, "updated": 0, "unchanged": 0, "snapshots_written": 0, "captures": 0}
    pages = unidentified = 0
    hook.access_token(open_id)  # fail fast on a disconnected account before touching sync state
    sync = warehouse.begin_sync(open_id, mode, window_start=window, now=now)
    handed_on = 0
    if sync.resumed and sync.listed_at is not None and listed_in_an_earlier_run(sync, context, now):
        stale = warehouse.finish_sync(sync, now=now)
        handed_on = stale.suspects_unconfirmed
        log.warning(
            "The %s sync %d of %s ended its listing at %s, in an earlier run, and video/query never answered "
            "for %d of its removal suspects; finishing it without them (none is marked removed) and "
            "listing afresh",
            mode,
            sync.sync_id,
            open_id,
            sync.listed_at,
            handed_on,
        )
        sync = warehouse.begin_sync(open_id, mode, window_start=window, now=now)
    # Stop where the sync's removals are judged: at its stored window_start. A resumed sync
    # keeps the window it started with; stopping at this run's (later) window would leave
    # the videos between the two unseen, and they would be taken for removed.
    window_start = sync.window_start_dt
    window_ms = int(window_start.timestamp() * 1000) if window_start else None
    if sync.resumed:
        log.info(
            "Resuming %s sync of %s at cursor %s after %d pages%s",
            mode,
            open_id,
            sync.cursor,
            sync.pages,
            f"; it covers videos since {sync.window_start}, as when it started" if window_start else "",
        )
    if sync.listed_at is None:

        def within_window(page: Any) -> bool:
            return window_ms is None or page.cursor is None or page.cursor >= window_ms

        pages_in = prefetched(
            hook.iter_video_pages(open_id, cursor=sync.cursor, fields=VIDEO_FIELDS),
            fetch_next=lambda page: page.has_more and within_window(page),
        )
        for page in pages_in:
            result = warehouse.load_video_page(
                sync, page.videos, cursor=page.cursor, captured_at=now, unidentified=page.skipped
            )
            sync = result.sync
            pages += 1
            unidentified += page.skipped
            for key in loaded:
                loaded[key] += getattr(result, key)
            if not within_window(page):
                break  # incremental: past the window (nothing was prefetched after it)
        # What the listing should have met but did not becomes a removal suspect. None when
        # it met a video without a usable id (in any try: the checkpoint counts them), since
        # that video and its page would be taken for deleted.
        sync = warehouse.end_listing(sync, now=now)
    else:
        log.info("The listing of this sync ended in an earlier try; confirming its removal suspects")
    confirmed = confirm_listing_suspects(hook, warehouse, sync, now=now, log=log)
    loaded["snapshots_written"] += confirmed["snapshots_written"]
    loaded["captures"] += confirmed["captures"]
    finished = warehouse.finish_sync(sync, now=now)
    if sync.unidentified:
        log.warning(
            "%d videos of %s came back without a usable id (%d in this try); no video was marked removed",
            sync.unidentified,
            open_id,
            unidentified,
        )
    log.info(
        "%s sync of %s: %d pages, %s; %d removal suspects: %d confirmed removed, %d live, "
        "%d pending a later look, %d held, %d unconfirmed",
        mode,
        open_id,
        pages,
        loaded,
        finished.removal_suspects,
        finished.removed,
        finished.suspects_live,
        finished.removals_pending,
        finished.removals_held,
        finished.suspects_unconfirmed,
    )
    return {
        "open_id": open_id,
        "mode": mode,
        "resumed": sync.resumed,
        "pages": pages,
        "pages_total": sync.pages,
        "videos_seen": sync.videos_seen,
        **loaded,
        "removal_suspects": finished.removal_suspects,
        "removed": finished.removed,
        "suspects_live": finished.suspects_live,
        "suspects_unconfirmed": finished.suspects_unconfirmed,
        "removals_pending": finished.removals_pending,
        "removals_held": finished.removals_held,
        "handed_on": handed_on,
        "unidentified": sync.unidentified,
        "cursor": sync.cursor,
    }
