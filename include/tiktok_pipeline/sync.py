"""What a video-list run does for one account: its window, resuming, paging into the warehouse.

``mode="full"`` walks the whole history, committing the cursor with the pages it stores, so a retry
after a crash resumes from the last committed page. ``mode="incremental"`` walks newest first until it
passes ``lookback_days`` (a resumed sync: the window it started with). What the walk should have
met but did not is handed to :mod:`tiktok_pipeline.removals`.

**Prefetch, and what a crash costs.** Pages are fetched in a background thread
(:func:`prefetched_batches`: one request in flight per hook) while the pages before them are
written; the write takes every page that has arrived meanwhile and commits them, with the cursor
of the last, in one transaction. While the writes keep up, each page commits on its own; when they
fall behind, several go together. The fetch never runs more than :data:`MAX_UNCOMMITTED_PAGES`
pages ahead of the last commit, and a page is never skipped: a crash (or SIGKILL) at any point
costs **0 pages lost and at most MAX_UNCOMMITTED_PAGES (8) pages re-requested** -- those asked
for and not yet committed when it died; the retry resumes at the last committed cursor and
fetches them again. A fetch error (after its retries) is raised only after the pages before it
are committed. An incremental walk does not fetch past its window, so it asks for no page more
than before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
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

#: At most this many video/list pages are fetched and not yet committed at any moment, so a crash
#: (or SIGKILL) re-requests at most this many pages. The fetch runs ahead of the writes by up to
#: this many pages, and the writes commit whatever has arrived in one transaction.
MAX_UNCOMMITTED_PAGES = 8


class _Failed:
    """The error the source raised, carried to the caller's thread."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetched_batches(
    items: Iterable[T],
    *,
    fetch_next: Callable[[T], bool] = lambda item: True,
    ahead: int = MAX_UNCOMMITTED_PAGES,
) -> Iterator[list[T]]:
    """Yield ``items`` in batches while later ones are produced in a background thread.

    Each batch is every item produced since the previous batch was taken (at least one). An item
    counts as *outstanding* from before it is asked for until the caller asks for the batch after
    the one that held it (for a sync: until that batch is committed); at most ``ahead`` are
    outstanding at once, so the source never runs more than ``ahead`` items past what the caller
    has finished with.

    The source iterator only ever runs in that one thread, one ``next()`` at a time, so a hook
    behind it has one request in flight; its errors are raised here, in the caller's thread, after
    the items produced before them have been yielded. ``fetch_next(item)`` false: nothing more is
    asked for after ``item`` (an incremental walk past its window). When the caller stops early
    (break or an exception), the request under way is waited for -- nothing is left running that
    could use the hook alongside the caller -- and the source is closed.
    """
    if ahead < 1:
        raise ValueError(f"ahead must be at least 1, got {ahead}")
    source = iter(items)
    ready: list[Any] = []
    changed = threading.Condition()
    state = {"free": ahead, "stop": False}

    def produce() -> None:
        while True:
            with changed:
                while state["free"] == 0 and not state["stop"]:
                    changed.wait()
                if state["stop"]:
                    return
                state["free"] -= 1
            try:
                item: Any = next(source, _END)
                last = item is _END or not fetch_next(item)
            except BaseException as exc:  # handed to the caller's thread
                item, last = _Failed(exc), True
            with changed:
                ready.append(item)
                if last and item is not _END:
                    ready.append(_END)
                changed.notify_all()
            if last:
                return

    thread = threading.Thread(target=produce, name="tiktok-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            with changed:
                while not ready:
                    changed.wait()
                taken = list(ready)
                ready.clear()
            batch = [item for item in taken if item is not _END and not isinstance(item, _Failed)]
            if batch:
                yield batch
                with changed:  # the caller is back: the batch is done with
                    state["free"] += len(batch)
                    changed.notify_all()
            failed = [item for item in taken if isinstance(item, _Failed)]
            if failed:
                raise failed[0].exc
            if _END in taken:
                return
    finally:
        with changed:
            state["stop"] = True
            changed.notify_all()
        thread.join()
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
        from tiktok_warehouse.loads import ListedPage

        def within_window(page: Any) -> bool:
            return window_ms is None or page.cursor is None or page.cursor >= window_ms

        batches = prefetched_batches(
            hook.iter_video_pages(open_id, cursor=sync.cursor, fields=VIDEO_FIELDS),
            fetch_next=lambda page: page.has_more and within_window(page),
        )
        # closing(): a failed write stops the fetch at once (and waits for the request under way),
        # rather than whenever the generator is collected.
        with closing(batches):
            for batch in batches:
                # The pages that arrived while the last batch was written, in one transaction (at
                # least one page: while the writes keep up, every page commits on its own).
                result = warehouse.load_video_pages(
                    sync, [ListedPage(page.videos, page.cursor, page.skipped) for page in batch], captured_at=now
                )
                sync = result.sync
                pages += len(batch)
                unidentified += sum(page.skipped for page in batch)
                for key in loaded:
                    loaded[key] += getattr(result, key)
        # An incremental walk stops at the first page past its window: nothing is asked for after it.
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
