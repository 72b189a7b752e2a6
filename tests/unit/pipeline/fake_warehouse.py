"""An in-memory stand-in for the warehouse's load calls the pipeline makes: records them, answers plainly.

The SQL itself is tested against the real Postgres in ``tests/warehouse``; here only what the
pipeline asks, in which order, and what it does with the answers.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from tiktok_warehouse.loads import ConfirmResult, FinishResult, PageResult, QueryResult, RemovalResult, SyncState


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
    ) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.suspects = suspects or []
        self.stale = stale or []
        self.recheck = recheck or []
        self.confirmed = confirmed or []
        self.pages: list[list[str]] = []

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

    def load_video_page(
        self, sync: SyncState, videos: list, *, cursor: int | None, captured_at: datetime, unidentified: int = 0
    ) -> PageResult:
        self.pages.append([v["id"] for v in videos])
        sync = replace(
            sync,
            cursor=cursor,
            pages=sync.pages + 1,
            videos_seen=sync.videos_seen + len(videos),
            unidentified=sync.unidentified + unidentified,
        )
        return PageResult(
            inserted=len(videos),
            updated=0,
            unchanged=0,
            snapshots_written=len(videos),
            new_in_sync=len(videos),
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
