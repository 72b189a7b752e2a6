"""Transfer operators, API to Postgres: one per Display API endpoint, one account per task instance.

Each operator orchestrates hook calls and warehouse writes and returns a small JSON-able summary;
API payloads never travel through XCom. Errors that a retry cannot fix (scope, invalid parameters,
contract breaks, an account that needs reconnecting) become :class:`AirflowFailException`, so
Airflow does not spend retries on them; transient ones are raised as they are and retried.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from tiktok_provider.errors import TikTokError
from tiktok_provider.fields import VIDEO_FIELDS
from tiktok_provider.hooks.tiktok import QUERY_BATCH, TikTokDisplayHook

if TYPE_CHECKING:
    from airflow.sdk import Context

    from tiktok_warehouse.loads import Warehouse

MODES = ("full", "incremental")


@contextmanager
def _failing_fast(open_id: str):
    """Turn errors that retrying cannot fix into AirflowFailException (no wasted retries)."""
    from tiktok_warehouse.tokens import AccountNotFound, TokenStoreError

    try:
        yield
    except TikTokError as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(str(exc)) from None
    except AccountNotFound:
        raise AirflowFailException(
            f"Account {open_id} is not in the warehouse; connect it with the tiktok_connect_account DAG first."
        ) from None
    except TokenStoreError as exc:  # missing/invalid encryption key, account not active
        raise AirflowFailException(str(exc)) from None


def _whole_number(value: Any, name: str, low: int, high: int) -> int:
    """Return a (templated) integer argument within ``low..high``, or fail the task: retrying cannot fix it."""
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,12}\s*", value):
        value = int(value)
    if type(value) is not int or not low <= value <= high:
        raise AirflowFailException(f"{name} must be a whole number within {low}..{high}, got {str(value)[:80]!r}")
    return value


class _TikTokTransferOperator(BaseOperator):
    """Shared plumbing: connection ids, the hook and the warehouse, the call counts in the summary.

    ``open_id`` and ``account_name`` are deliberately not template fields: they come from the
    warehouse, and a display name is whatever a creator typed. Rendering one as Jinja would let a
    creator run a template in our workers (``{{ conn.tiktok_default.extra_dejson }}``).
    """

    ui_color = "#fe2c55"

    def __init__(
        self,
        *,
        open_id: str,
        account_name: str | None = None,
        tiktok_conn_id: str = TikTokDisplayHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.open_id = open_id
        self.account_name = account_name
        self.tiktok_conn_id = tiktok_conn_id

    def _hook(self) -> TikTokDisplayHook:
        return TikTokDisplayHook(tiktok_conn_id=self.tiktok_conn_id)

    @staticmethod
    def _warehouse(hook: TikTokDisplayHook) -> Warehouse:
        from tiktok_warehouse.db import get_engine
        from tiktok_warehouse.loads import Warehouse

        return Warehouse(get_engine(hook.config.warehouse_conn_id))

    @staticmethod
    def _api_summary(hook: TikTokDisplayHook) -> dict[str, Any]:
        return {
            "api_calls": dict(hook.calls),
            "retries": dict(hook.retries),
            "token_refreshes": hook.refreshes,
            "sanitised_values": len(hook.issues),
        }


class TikTokUserInfoOperator(_TikTokTransferOperator):
    """
    Fetch one account's profile and upsert today's row of ``profile_snapshots``.

    The snapshot is labelled with the UTC date on which it was captured, never with the run's
    logical date: re-running last week's run writes today's numbers under today's date.

    :param open_id: the account.
    :param fields: user fields to request; default every field the account's scopes allow.
    """

    template_fields: Sequence[str] = ("fields",)

    def __init__(self, *, fields: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fields = fields

    def execute(self, context: Context) -> dict[str, Any]:
        hook = self._hook()
        with _failing_fast(self.open_id):
            user = hook.get_user_info(self.open_id, self.fields)
            captured_at = datetime.now(UTC)
            warehouse = self._warehouse(hook)
            warehouse.upsert_account_profile(self.open_id, user, now=captured_at)
            written = warehouse.upsert_profile_snapshot(self.open_id, user, captured_at=captured_at)
        logical = context.get("logical_date")
        if logical is not None and logical.date() != captured_at.date():
            self.log.info(
                "Run's logical date is %s; the snapshot is stored under its capture date %s",
                logical.date(),
                captured_at.date(),
            )
        self.log.info(
            "Snapshot of %s for %s: %s", self.open_id, captured_at.date(), "written" if written else "unchanged"
        )
        return {
            "open_id": self.open_id,
            "snapshot_date": captured_at.date().isoformat(),
            "written": bool(written),
            "fields": sorted(user),
            **self._api_summary(hook),
        }


class TikTokVideoListOperator(_TikTokTransferOperator):
    """
    Page through one account's videos into ``videos`` and ``video_snapshots``.

    ``mode="full"`` walks the whole history, committing the cursor with every page, so a retry after
    a crash resumes from the last committed page. ``mode="incremental"`` walks newest first until it
    passes ``lookback_days`` (a resumed sync: the window it started with). Videos the walk should
    have met but did not are removal suspects, stored with the checkpoint; ``video/query`` (20 ids a
    call, only when there are suspects) confirms them: those it leaves out are marked removed, those
    it returns are live and updated.

    :param mode: ``full`` or ``incremental``.
    :param lookback_days: how far back an incremental run looks.
    """

    template_fields: Sequence[str] = ("mode", "lookback_days")

    def __init__(
        self,
        *,
        mode: str = "incremental",
        lookback_days: int = 7,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self.lookback_days = lookback_days

    def execute(self, context: Context) -> dict[str, Any]:
        if self.mode not in MODES:
            raise AirflowFailException(f"mode must be one of {MODES}, got {self.mode!r}")
        lookback = _whole_number(self.lookback_days, "lookback_days", 1, 3650)
        hook = self._hook()
        now = datetime.now(UTC)
        requested_window = now - timedelta(days=lookback) if self.mode == "incremental" else None
        loaded = {"inserted": 0, "updated": 0, "unchanged": 0}
        pages = unidentified = 0
        with _failing_fast(self.open_id):
            warehouse = self._warehouse(hook)
            hook.access_token(self.open_id)  # fail fast on a disconnected account before touching sync state
            sync = warehouse.begin_sync(self.open_id, self.mode, window_start=requested_window, now=now)
            # Stop where the sync's removals are judged: at its stored window_start. A resumed sync
            # keeps the window it started with; stopping at this run's (later) window would leave
            # the videos between the two unseen, and they would be taken for removed.
            window_start = sync.window_start_dt
            window_ms = int(window_start.timestamp() * 1000) if window_start else None
            if sync.resumed:
                self.log.info(
                    "Resuming %s sync of %s at cursor %s after %d pages%s",
                    self.mode,
                    self.open_id,
                    sync.cursor,
                    sync.pages,
                    f"; it covers videos since {sync.window_start}, as when it started" if window_start else "",
                )
            if sync.listed_at is None:
                for page in hook.iter_video_pages(self.open_id, cursor=sync.cursor, fields=VIDEO_FIELDS):
                    result = warehouse.load_video_page(
                        sync, page.videos, cursor=page.cursor, captured_at=now, unidentified=page.skipped
                    )
                    sync = result.sync
                    pages += 1
                    unidentified += page.skipped
                    for key in loaded:
                        loaded[key] += getattr(result, key)
                    if window_ms is not None and page.cursor is not None and page.cursor < window_ms:
                        break  # incremental: past the window
                # What the listing should have met but did not becomes a removal suspect. None when
                # it met a video without a usable id (in any try: the checkpoint counts them), since
                # that video and its page would be taken for deleted.
                sync = warehouse.end_listing(sync, now=now)
            else:
                self.log.info("The listing of this sync ended in an earlier try; confirming its removal suspects")
            suspects = warehouse.removal_suspects(sync)
            if suspects:
                self.log.info(
                    "%d videos of %s were not in the listing; asking video/query about them (%d calls) "
                    "before marking any removed",
                    len(suspects),
                    self.open_id,
                    math.ceil(len(suspects) / QUERY_BATCH),
                )
                for batch, videos in hook.query_videos(self.open_id, suspects, fields=VIDEO_FIELDS):
                    warehouse.confirm_removals(sync, batch, videos, captured_at=now)
            finished = warehouse.finish_sync(sync, now=now)
        if sync.unidentified:
            self.log.warning(
                "%d videos of %s came back without a usable id (%d in this try); no video was marked removed",
                sync.unidentified,
                self.open_id,
                unidentified,
            )
        self.log.info(
            "%s sync of %s: %d pages, %s; %d removal suspects: %d confirmed removed, %d live, %d unconfirmed",
            self.mode,
            self.open_id,
            pages,
            loaded,
            finished.removal_suspects,
            finished.removed,
            finished.suspects_live,
            finished.suspects_unconfirmed,
        )
        return {
            "open_id": self.open_id,
            "mode": self.mode,
            "resumed": sync.resumed,
            "pages": pages,
            "pages_total": sync.pages,
            "videos_seen": sync.videos_seen,
            **loaded,
            "removal_suspects": finished.removal_suspects,
            "removed": finished.removed,
            "suspects_live": finished.suspects_live,
            "suspects_unconfirmed": finished.suspects_unconfirmed,
            "unidentified": sync.unidentified,
            "cursor": sync.cursor,
            **self._api_summary(hook),
        }


class TikTokVideoQueryOperator(_TikTokTransferOperator):
    """
    Refresh cover URLs and counts with ``video/query``, 20 ids a call.

    An id the answer leaves out is only a removal suspect: the suspects are asked about once more
    (a second look, ``ceil(suspects / 20)`` calls, none when nothing is missing), and those the
    second answer leaves out too are marked removed; those it returns are updated.

    :param video_ids: ids to query; by default the account's videos whose cover expires within
        ``horizon_minutes`` or has expired.
    :param horizon_minutes: how soon a cover must expire to be refreshed.
    """

    template_fields: Sequence[str] = ("video_ids", "horizon_minutes")

    def __init__(self, *, video_ids: Sequence[str] | None = None, horizon_minutes: int = 60, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.video_ids = video_ids
        self.horizon_minutes = horizon_minutes

    def execute(self, context: Context) -> dict[str, Any]:
        horizon = _whole_number(self.horizon_minutes, "horizon_minutes", 0, 7 * 24 * 60)
        hook = self._hook()
        now = datetime.now(UTC)
        updated = removed = requested = live = 0
        suspects: list[str] = []
        with _failing_fast(self.open_id):
            warehouse = self._warehouse(hook)
            ids = (
                list(self.video_ids)
                if self.video_ids is not None
                else warehouse.stale_cover_video_ids(self.open_id, horizon=timedelta(minutes=horizon), now=now)
            )
            for batch, videos in hook.query_videos(self.open_id, ids, fields=VIDEO_FIELDS):
                result = warehouse.apply_video_query(self.open_id, batch, videos, captured_at=now)
                requested += len(batch)
                updated += result.updated
                suspects += result.missing
            if suspects:
                # One answer is not enough to call a video deleted: look again at the ids it left out.
                self.log.info(
                    "%d of %d videos of %s were missing from video/query; asking again before marking any removed",
                    len(suspects),
                    requested,
                    self.open_id,
                )
                for batch, videos in hook.query_videos(self.open_id, suspects, fields=VIDEO_FIELDS):
                    result = warehouse.apply_video_query(
                        self.open_id, batch, videos, captured_at=now, mark_missing=True
                    )
                    updated += result.updated
                    removed += result.removed
                    live += result.returned
        self.log.info(
            "Cover refresh of %s: %d queried, %d updated; %d removal suspects: %d confirmed removed, %d live",
            self.open_id,
            requested,
            updated,
            len(suspects),
            removed,
            live,
        )
        return {
            "open_id": self.open_id,
            "requested": requested,
            "updated": updated,
            "removal_suspects": len(suspects),
            "removed": removed,
            "suspects_live": live,
            **self._api_summary(hook),
        }
