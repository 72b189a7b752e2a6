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


def _listed_in_an_earlier_run(sync: Any, context: Context, now: datetime) -> bool:
    """Whether the resumed sync's listing ended before this DAG run started (not in an earlier try of it).

    A listing that ended an hour or more ago counts as earlier too (a run without a start date).
    """
    from tiktok_warehouse.loads import REMOVAL_CONFIRM_AFTER

    listed_at = datetime.fromisoformat(sync.listed_at)
    dag_run = context.get("dag_run")
    run_started = getattr(dag_run, "start_date", None)
    return (run_started is not None and listed_at < run_started) or listed_at <= now - REMOVAL_CONFIRM_AFTER


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
    call, only when there are suspects) answers for them: those it returns are live and updated;
    those it leaves out are marked removed only if they were already missing an hour or more
    before, in an earlier run (else they are pending, for a later run), and only if that is not a
    suspiciously large share of the account (else they are held, with a warning).

    A sync resumed from an earlier run whose listing had already ended (its video/query kept
    failing) is finished at once -- its unanswered suspects are handed on -- and a fresh listing
    starts in the same task, so a failing video/query never holds back new videos.

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
            handed_on = 0
            if sync.resumed and sync.listed_at is not None and _listed_in_an_earlier_run(sync, context, now):
                stale = warehouse.finish_sync(sync, now=now)
                handed_on = stale.suspects_unconfirmed
                self.log.warning(
                    "The %s sync %d of %s ended its listing at %s, in an earlier run, and video/query never answered "
                    "for %d of its removal suspects; finishing it without them (none is marked removed) and "
                    "listing afresh",
                    self.mode,
                    sync.sync_id,
                    self.open_id,
                    sync.listed_at,
                    handed_on,
                )
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
            "%s sync of %s: %d pages, %s; %d removal suspects: %d confirmed removed, %d live, "
            "%d pending a later look, %d held, %d unconfirmed",
            self.mode,
            self.open_id,
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
            "removals_pending": finished.removals_pending,
            "removals_held": finished.removals_held,
            "handed_on": handed_on,
            "unidentified": sync.unidentified,
            "cursor": sync.cursor,
            **self._api_summary(hook),
        }


class TikTokVideoQueryOperator(_TikTokTransferOperator):
    """
    Refresh cover URLs and counts with ``video/query``, 20 ids a call.

    Besides the stale covers it asks about the account's pending removals and the videos marked
    removed in the last 7 days (none when there are none). One answer marks nothing: a live video
    it leaves out for the first time becomes a pending removal; one already missing an hour or
    more earlier (an earlier run) is marked removed -- unless the run would mark a suspiciously
    large share of the account, then none is (``removals_held``, with a warning). A returned
    video is updated, its pending removal cleared, and restored if it had been marked removed.

    :param video_ids: ids to query; by default the account's videos whose cover expires within
        ``horizon_minutes`` or has expired, its pending removals and its recent removals.
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
        updated = requested = restored = pending = missing = 0
        rechecked: list[str] = []
        confirmed: list[str] = []
        with _failing_fast(self.open_id):
            warehouse = self._warehouse(hook)
            if self.video_ids is not None:
                ids = list(self.video_ids)
            else:
                stale = warehouse.stale_cover_video_ids(self.open_id, horizon=timedelta(minutes=horizon), now=now)
                rechecked = warehouse.removal_recheck_ids(self.open_id, now=now)
                ids = sorted(set(stale) | set(rechecked))
            for batch, videos in hook.query_videos(self.open_id, ids, fields=VIDEO_FIELDS):
                result = warehouse.apply_video_query(self.open_id, batch, videos, captured_at=now)
                requested += len(batch)
                updated += result.updated
                restored += result.restored
                missing += len(result.missing)
                pending += result.pending
                confirmed += result.confirmed
            # Marked only now, with every answer in hand: the share guard judges the run as a whole.
            judged = warehouse.mark_removals(self.open_id, confirmed, now=now)
        self.log.info(
            "Cover refresh of %s: %d queried (%d pending or recently removed), %d updated, %d restored; "
            "%d left out: %d newly pending, %d confirmed removed, %d held",
            self.open_id,
            requested,
            len(rechecked),
            updated,
            restored,
            missing,
            pending,
            judged.removed,
            judged.held,
        )
        return {
            "open_id": self.open_id,
            "requested": requested,
            "updated": updated,
            "rechecked": len(rechecked),
            "restored": restored,
            "removal_suspects": missing,
            "removals_pending": pending,
            "removed": judged.removed,
            "removals_held": judged.held,
            **self._api_summary(hook),
        }
