"""An in-memory stand-in for the warehouse's load calls the pipeline makes: records them, answers plainly.

The SQL itself is tested against the real Postgres in ``tests/warehouse``; here only what the
pipeline asks, in which order, and what it does with the answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from tiktok_warehouse.loads import (
    ConfirmResult,
    FinishResult,
    ListedPage,
    PageResult,
    QueryResult,
    RemovalResult,
    SyncState,
)


class FakeWarehouse:
    #: No database: the operators skip the cover archive (tested against Postgres in tests/integration).
    engine = None

    def __init__(
        self,
        *,
        suspects: list[str] | None = None,
        stale: list[str] | None = None,
        recheck: list[str] | None = None,
        confirmed: list[str] | None = None,
        write_seconds: float = 0.0,
        requested: Callable[[], int] | None = None,
    ) -> None:
        """
        :param write_seconds: how long each page batch takes to "commit".
        :param requested: how many video/list pages have been asked for so far (to check the crash bound).
        """
        self.calls: list[tuple[str, Any]] = []
        self.suspects = suspects or []
        self.stale = stale or []
        self.recheck = recheck or []
        self.confirmed = confirmed or []
        self.pages: list[list[str]] = []
        self.batches: list[list[list[str]]] = []
        self.write_seconds = write_seconds
        self.requested = requested
        self.max_uncommitted = 0

    # -- profiles
    def upsert_account_profile(self, open_id: str, user: dict, *, now: datetime) -> None:
        self.calls.append(("account_profile", dict(user)))

    def upsert_profile_snapshot(self, open_id: str, user: dict, *, captured_at: datetime) -> bool:
        self.calls.append(("profile_snapshot", dict(user)))
        return True

    # -- syncs
    def begin_sync(self, open_id: str, mode: str, *, window_start: datetime | None, now: datetime) -> SyncState:
        self.calls.append(("begin_sync", window_start))
        return SyncState(
            sync_id=1,
            open_id=open_id,
            mode=mode,
            cursor=None,
            window_start=window_start.isoformat() if window_start else None,
            started_at=now.isoformat(),
            pages=0,
            videos_seen=0,
            resumed=False,
        )

    def load_video_pages(self, sync: SyncState, pages: list[ListedPage], *, captured_at: datetime) -> PageResult:
        if self.requested is not None:  # pages asked for and not committed, this batch included
            self.max_uncommitted = max(self.max_uncommitted, self.requested() - len(self.pages))
        if self.write_seconds:
            time.sleep(self.write_seconds)
        self.batches.append([[v["id"] for v in page.videos] for page in pages])
        self.pages += self.batches[-1]
        videos = sum(len(page.videos) for page in pages)
        cursors = [page.cursor for page in pages if page.cursor is not None]
        sync = replace(
            sync,
            cursor=cursors[-1] if cursors else sync.cursor,
            pages=sync.pages + len(pages),
            videos_seen=sync.videos_seen + videos,
            unidentified=sync.unidentified + sum(page.unidentified for page in pages),
        )
        return PageResult(
            inserted=videos,
            updated=0,
            unchanged=0,
            snapshots_written=videos,
            new_in_sync=videos,
            sync=sync,
        )

    def end_listing(self, sync: SyncState, *, now: datetime) -> SyncState:
        self.calls.append(("end_listing", sync.pages))
        return replace(sync, listed_at=now.isoformat(), removal_suspects=len(self.suspects))

    def removal_suspects(self, sync: SyncState) -> list[str]:
        return list(self.suspects)

    def confirm_removals(
        self, sync: SyncState, batch: list[str], videos: list, *, captured_at: datetime
    ) -> ConfirmResult:
        self.calls.append(("confirm_removals", (list(batch), [v["id"] for v in videos])))
        return ConfirmResult(
            suspects=len(batch), live=len(videos), missing=0, updated=len(videos), snapshots_written=len(videos)
        )

    def finish_sync(self, sync: SyncState, *, now: datetime) -> FinishResult:
        self.calls.append(("finish_sync", sync.sync_id))
        return FinishResult(
            sync_id=sync.sync_id,
            open_id=sync.open_id,
            mode=sync.mode,
            pages=sync.pages,
            videos_seen=sync.videos_seen,
            removed=0,
            removal_suspects=len(self.suspects),
        )

    # -- the cover refresh
    def stale_cover_video_ids(self, open_id: str, *, horizon: Any, now: datetime) -> list[str]:
        return list(self.stale)

    def removal_recheck_ids(self, open_id: str, *, now: datetime) -> list[str]:
        return list(self.recheck)

    def apply_video_query(self, open_id: str, batch: list[str], videos: list, *, captured_at: datetime) -> QueryResult:
        returned = {v["id"] for v in videos}
        missing = [i for i in batch if i not in returned]
        self.calls.append(("apply_video_query", list(batch)))
        return QueryResult(
            requested=len(batch),
            returned=len(returned),
            inserted=0,
            updated=len(returned),
            unchanged=0,
            snapshots_written=len(returned),
            missing=missing,
            confirmed=[i for i in missing if i in self.confirmed],
        )

    def mark_removals(self, open_id: str, video_ids: list[str], *, now: datetime) -> RemovalResult:
        self.calls.append(("mark_removals", sorted(video_ids)))
        return RemovalResult(removed=len(video_ids), held=0)
