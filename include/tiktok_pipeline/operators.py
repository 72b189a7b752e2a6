"""Transfer operators, TikTok to Postgres: one per Display API endpoint, one account per task instance.

Thin: each builds the hook with the warehouse's token store (:mod:`tiktok_pipeline.hooks`), runs
what its run does for the account (:mod:`tiktok_pipeline.sync`, :mod:`tiktok_pipeline.removals`)
and returns a small JSON-able summary; API payloads never travel through XCom. Errors that a retry
cannot fix become ``AirflowFailException`` (:func:`tiktok_provider.errors.failing_fast`), so
Airflow does not spend retries on them; transient ones are raised as they are and retried.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from tiktok_pipeline.hooks import display_hook, shared_engines, warehouse_of
from tiktok_pipeline.names import CONNECT_DAG_ID, FIRST_RUN_ID_PREFIX, TIKTOK_CONN_ID
from tiktok_pipeline.removals import refresh_covers
from tiktok_pipeline.sync import run_mode, sync_videos
from tiktok_provider.errors import account_label, failing_fast
from tiktok_provider.links import EXTRA_LINKS, PROFILE_LINKS

if TYPE_CHECKING:
    from airflow.sdk import Context

    from tiktok_provider.hooks.tiktok import TikTokDisplayHook


def _failing_fast(operator: _TikTokToPostgresOperator) -> Any:
    """Turn errors that retrying cannot fix into AirflowFailException naming the account (no wasted retries)."""
    return failing_fast(
        not_found=f"not in the warehouse; connect it with the {CONNECT_DAG_ID} DAG first.",
        account=account_label(operator.open_id, operator.account_name),
        log=operator.log,
    )


def _whole_number(value: Any, name: str, low: int, high: int) -> int:
    """Return a (templated) integer argument within ``low..high``, or fail the task: retrying cannot fix it."""
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,12}\s*", value):
        value = int(value)
    if type(value) is not int or not low <= value <= high:
        raise AirflowFailException(f"{name} must be a whole number within {low}..{high}, got {str(value)[:80]!r}")
    return value


#: How far back a ``recent`` run looks when ``lookback_days`` is not given.
DEFAULT_LOOKBACK_DAYS = 7


def _add_up(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The summaries of a batch's accounts added up (numbers summed, dicts of numbers merged, flags counted).

    A flag becomes how many accounts had it: ``written`` (a profile snapshot written) is what the
    profile Asset's ``rows`` counts (:data:`tiktok_pipeline.assets.ROWS`).
    """
    totals: dict[str, Any] = {}
    for result in results:
        for key, value in result.items():
            if key == "cursor":
                continue
            if isinstance(value, int):  # a bool too: True counts 1
                totals[key] = totals.get(key, 0) + value
            elif isinstance(value, dict):
                bucket = totals.setdefault(key, {})
                for inner, count in value.items():
                    if isinstance(count, int) and not isinstance(count, bool):
                        bucket[inner] = bucket.get(inner, 0) + count
    return totals


def _flat_numbers(totals: dict[str, Any]) -> dict[str, int]:
    """The plain counts of a summary (no nested dicts): what a batch's ``this_try`` holds."""
    return {key: value for key, value in totals.items() if isinstance(value, int) and not isinstance(value, bool)}


class _BatchLedger:
    """What each account of a batch task reported, kept across the task's tries in Airflow's task state store.

    The store (``context["task_state_store"]``, Airflow 3.3) is scoped to the task instance --
    the run, the task and the map index -- and outlives retries and clears; so a later try that finds
    an account already done can count what the try that did it wrote, once. One key a batch task
    (not one an account: a row of Airflow's metadata database each), rewritten after each account,
    so a worker killed mid-batch loses none of it; only the counts are kept (:func:`_counts`).
    Best effort: without the store, or when it fails, an account done earlier is counted as done
    with its rows unknown (``batch_done_earlier_unrecorded``), and nothing fails.
    """

    KEY = "tiktok.batch_account_counts"

    def __init__(self, context: Any, log: Any) -> None:
        self.store = (context or {}).get("task_state_store")
        self.log = log
        self.kept: dict[str, Any] = {}
        if self.store is None:
            return
        try:
            kept = self.store.get(self.KEY)
        except Exception as exc:
            self.log.warning("The counts of earlier tries could not be read back (%s: %s)", type(exc).__name__, exc)
            self.store = None  # and not overwritten with this try's alone
            return
        if isinstance(kept, dict):
            self.kept = {k: v for k, v in kept.items() if isinstance(v, dict)}

    def remember(self, open_id: str, summary: dict[str, Any]) -> None:
        self.kept[open_id] = _counts(summary)
        if self.store is None:
            return
        try:
            self.store.set(self.KEY, self.kept)
        except Exception as exc:  # the account's work is stored: only a later try's count is at stake
            self.log.warning(
                "The counts of %s were not kept for a later try (%s: %s)", open_id, type(exc).__name__, exc
            )

    def recall(self, open_id: str) -> dict[str, Any] | None:
        return self.kept.get(open_id)


def _counts(summary: dict[str, Any]) -> dict[str, Any]:
    """What :func:`_add_up` reads of an account's summary: its numbers, flags and dicts of numbers."""
    kept: dict[str, Any] = {}
    for key, value in summary.items():
        if key == "cursor":
            continue
        if isinstance(value, int):
            kept[key] = value
        elif isinstance(value, dict):
            kept[key] = {k: v for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}
    return kept


#: The most one failed account's error takes in a batch's failure message.
BRIEF_ERROR = 600


BATCH_TIMEOUT_OPTION = "batch_timeout_hours"
DEFAULT_BATCH_TIMEOUT_HOURS = 24


def batch_timeout_cap() -> timedelta:
    """``[tiktok] batch_timeout_hours``: the longest ``execution_timeout`` a batch task gets (default 24)."""
    from airflow.configuration import conf

    raw = (conf.get("tiktok", BATCH_TIMEOUT_OPTION, fallback="") or "").strip()
    try:
        hours = float(raw) if raw else DEFAULT_BATCH_TIMEOUT_HOURS
    except ValueError:
        hours = -1
    if not 0 < hours <= 24 * 30:
        raise ValueError(f"[tiktok] {BATCH_TIMEOUT_OPTION} must be a number of hours in (0, 720], got {raw!r}")
    return timedelta(hours=hours)


def _failure_text(exc: BaseException, who: str) -> str:
    """One failed account's error in a batch's failure: at most BRIEF_ERROR characters, cut in the middle.

    The end of an error says TikTok's ``log_id`` and what to do next, so a long message from TikTok
    loses its middle, never those. The account, which the batch names already, is not said twice.
    """
    text = str(exc).removeprefix(f"Account {who}: ")
    if len(text) > BRIEF_ERROR:
        head = BRIEF_ERROR // 4
        text = f"{text[:head]} [...] {text[len(text) - (BRIEF_ERROR - head - 7) :]}"
    return f"{type(exc).__name__}: {text}"


def max_covers_setting() -> int | None:
    """``[tiktok] max_covers_per_account``: stale covers one refresh asks for at most (default: all)."""
    from airflow.configuration import conf

    raw = (conf.get("tiktok", "max_covers_per_account", fallback="") or "").strip()
    if not raw:
        return None
    value = int(raw)
    if value < 0:
        raise AirflowFailException(f"[tiktok] max_covers_per_account must be >= 0, got {value}")
    return value


def _run_after(context: Any) -> datetime | None:
    """When the run could start: work the warehouse records since then was done by this run (or later)."""
    return getattr((context or {}).get("dag_run"), "run_after", None)


def _exists(warehouse: Any, sql: str, **params: Any) -> bool:
    from sqlalchemy import text

    with warehouse.engine.connect() as conn:
        return conn.execute(text(sql), params).first() is not None


def run_priority(context: Any, *, bulk: bool = False) -> str:
    """The rate-budget priority of a task's TikTok calls (:mod:`tiktok_provider.budget`).

    ``interactive`` in the runs the accounts page starts for a newly connected account (someone is
    waiting to see it), else ``bulk`` for whole-history work (``bulk=True``), else ``normal``
    (daily snapshots, cover refresh).
    """
    dag_run = (context or {}).get("dag_run")
    if str(getattr(dag_run, "run_id", "") or "").startswith(FIRST_RUN_ID_PREFIX):
        return "interactive"
    return "bulk" if bulk else "normal"


class _TikTokToPostgresOperator(BaseOperator):
    """Shared plumbing: connection id, the hook, the call counts in the summary.

    ``open_id`` and ``account_name`` are deliberately not template fields: they come from the
    warehouse, and a display name is whatever a creator typed. Rendering one as Jinja would let a
    creator run a template in our workers (``{{ conn.tiktok_default.extra_dejson }}``).
    """

    ui_color = "#fe2c55"
    operator_extra_links = EXTRA_LINKS

    def __init__(
        self,
        *,
        open_id: str | None = None,
        account_name: str | None = None,
        accounts: Sequence[dict[str, str]] | None = None,
        tiktok_conn_id: str = TIKTOK_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (open_id is None) == (accounts is None):
            raise TypeError("give either open_id (one account) or accounts (a batch)")
        self.open_id = open_id
        self.account_name = account_name
        self.accounts = accounts
        self.tiktok_conn_id = tiktok_conn_id
        #: One account's time limit: the task's ``execution_timeout`` as the DAG declares it, which
        #: a task of one account has as its own. A batch gives each of its accounts this limit, and
        #: itself this limit times its accounts, at most ``[tiktok] batch_timeout_hours``
        #: (see :mod:`tiktok_pipeline.time_limits`).
        self.account_timeout: timedelta | None = self.execution_timeout
        if accounts is not None and self.execution_timeout and isinstance(accounts, Sequence):
            # Capped (``[tiktok] batch_timeout_hours``, default 24): 50 accounts of 2 h each would hide a stuck
            # batch from on-call for 100 hours. Never below one account's own limit.
            whole = self.execution_timeout * max(1, len(accounts))
            self.execution_timeout = max(self.execution_timeout, min(whole, batch_timeout_cap()))

    def execute(self, context: Context) -> dict[str, Any]:
        from tiktok_pipeline.time_limits import task_timeout_spares_token_calls

        # Airflow's execution_timeout never lands inside a token refresh (it would lose the rotated token).
        with task_timeout_spares_token_calls():
            if self.accounts is None:
                return self.execute_account(context)
            with shared_engines():  # one engine for the batch, not one per account
                return self._execute_batch(context)

    def execute_account(self, context: Context) -> dict[str, Any]:
        """Do the task's work for ``self.open_id``; return its summary."""
        raise NotImplementedError

    def done_in_run(self, warehouse: Any, context: Any) -> bool:
        """Whether the warehouse already records this account's work for this run (a batch skips it)."""
        return False

    def _execute_batch(self, context: Context) -> dict[str, Any]:
        """Each account of the batch in turn; one's failure never stops the others.

        An account whose work the warehouse already records for this run (:meth:`done_in_run`) is
        not done again, so clearing the task (or its retry) redoes only what is not done. Each
        account gets the time limit its own task would have had (``account_timeout``): one that
        runs over is stopped and counted failed, and the batch goes on.

        The summary speaks for the whole run, whichever try did the work: each account is counted
        once, by the summary of the try that did it (kept in Airflow's task state store, which
        outlives retries and clears), with ``batch_done`` (this try), ``batch_done_earlier`` (an
        earlier try of this run) and ``this_try`` (what this try itself wrote). At the end the task
        fails naming every failed account (display name and open_id) with its error: with
        ``AirflowFailException`` when no retry can help any of them, else with a retryable error.
        """
        from airflow.sdk.exceptions import AirflowTaskTimeout

        from tiktok_pipeline.time_limits import AccountTimeLimitReached, account_time_limit

        accounts = list(self.accounts or ())
        label = self.account_name  # "accounts 51-100 of 2000": the grid renders it again when the task ends
        warehouse = warehouse_of(self._hook(context))
        ledger = _BatchLedger(context, self.log)
        results: list[dict[str, Any]] = []  # done in this try
        earlier: list[dict[str, Any] | None] = []  # done in an earlier try (None: its summary was not kept)
        failed: list[tuple[str, BaseException]] = []
        limit = self.account_timeout

        def tally() -> str:
            return (
                f"{len(results)} done in this try, {len(earlier)} already done in an earlier try of this run, "
                f"{len(failed)} failed"
            )

        try:
            for account in accounts:
                self.open_id, self.account_name = account["open_id"], account.get("account_name")
                # As the per-account errors name it: the display name on one line, and the open_id.
                who = account_label(self.open_id, self.account_name)
                try:
                    if self.done_in_run(warehouse, context):
                        kept = ledger.recall(self.open_id)
                        self.log.info(
                            "Account %s: already done in an earlier try of this run%s; not done again",
                            who,
                            "" if kept is not None else " (what it wrote was not kept: not in this summary's counts)",
                        )
                        earlier.append(kept)
                        continue
                    with account_time_limit(
                        limit,
                        f"timed out after {limit}, the task's execution_timeout, which each account of a batch "
                        "has as its own. What it stored stays, and the next try goes on from there (a whole-history "
                        "sync from its last committed page); if it keeps timing out, raise execution_timeout for "
                        "this task",
                    ):
                        result = self.execute_account(context)
                    results.append(result)
                    ledger.remember(self.open_id, result)
                except AccountTimeLimitReached as exc:
                    self.log.error("Account %s failed: %s", who, exc)
                    failed.append((who, exc))
                except Exception as exc:
                    self.log.error("Account %s failed: %s: %s", who, type(exc).__name__, exc)
                    failed.append((who, exc))
        except AirflowTaskTimeout:
            left = len(accounts) - len(results) - len(earlier) - len(failed)
            self.log.error(
                "The batch task timed out (execution_timeout %s): %s, %d not reached; the next try does only "
                "what is not done",
                self.execution_timeout,
                tally(),
                left,
            )
            raise
        finally:
            self.open_id, self.account_name = None, label
        summary = _add_up(results + [kept for kept in earlier if kept is not None])
        summary.update(
            batch_accounts=len(accounts),
            batch_done=len(results),
            batch_done_earlier=len(earlier),
            batch_done_earlier_unrecorded=sum(kept is None for kept in earlier),
            this_try=_flat_numbers(_add_up(results)),
        )
        self.log.info("Batch of %d accounts: %s", len(accounts), tally())
        if failed:
            listed = "; ".join(f"{who}: {_failure_text(exc, who)}" for who, exc in failed)
            message = (
                f"{len(failed)} of {len(accounts)} accounts failed ({len(results)} done in this try and "
                f"{len(earlier)} in an earlier one are stored; clearing this task redoes only what is not done): "
                f"{listed}"
            )
            if all(isinstance(exc, AirflowFailException) for _, exc in failed):
                raise AirflowFailException(message)
            raise AirflowException(message)
        return summary

    def _hook(self, context: Any = None, *, bulk: bool = False) -> TikTokDisplayHook:
        return display_hook(self.tiktok_conn_id, priority=run_priority(context, bulk=bulk))

    #: The Display API endpoint the operator reads (its OpenLineage input).
    endpoint: str = ""

    @contextmanager
    def _reconnect_alert(self) -> Iterator[None]:
        """Tell on-call once when the account must be reconnected; the error goes on as it was.

        Not for an account already marked (``TikTokAccountNotActive``): the task that marked it told
        on-call, and a batch retried for another account's sake meets it again in every try.
        """
        from tiktok_provider.errors import TikTokAccountNotActive

        try:
            yield
        except Exception as exc:
            if getattr(exc, "reauth_required", False) and not isinstance(exc, TikTokAccountNotActive):
                try:
                    from tiktok_provider.notifications.tiktok import alert_reconnect_needed

                    alert_reconnect_needed(self.open_id, self.account_name, reason=type(exc).__name__)
                except Exception:  # an alert that cannot go out must not hide the failure itself
                    self.log.warning("The reconnect alert for %s was not sent", self.open_id, exc_info=True)
            raise

    def _archive(self, engine: Any, items: list[Any], now: datetime, *, api_url: str) -> dict[str, Any]:
        """Archive covers/avatars; a failure is logged and counted, never fails or undoes the load.

        :param api_url: the TikTok connection's base URL (its host may serve covers from a private address).
        """
        if not items or engine is None:
            return {"checked": 0}
        from tiktok_pipeline.archive import CoverArchiver, archive_settings

        try:
            result = CoverArchiver(engine, archive_settings(), api_url=api_url).archive(items, now=now)
        except Exception as exc:
            self.log.warning(
                "Cover archive of %s failed (%s: %s); the load stands: %s",
                self.open_id,
                type(exc).__name__,
                exc,
                ", ".join(item.subject_id for item in items[:20]),
            )
            return {"checked": len(items), "failed": len(items), "error": type(exc).__name__}
        return result.summary()  # each refused/failed item is logged by the archiver with its id and reason

    @staticmethod
    def _count_rows(summary: dict[str, Any]) -> None:
        """``tiktok.rows_written.<table>`` metrics of one load's summary."""
        from tiktok_provider import metrics

        metrics.rows_written("profile_snapshots", 1 if summary.get("written") is True else 0)
        metrics.rows_written("videos", int(summary.get("inserted", 0)) + int(summary.get("updated", 0)))
        metrics.rows_written("video_snapshots", int(summary.get("snapshots_written", 0)))
        metrics.rows_written("video_captures", int(summary.get("captures", 0)))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the endpoint in, the warehouse tables out (:mod:`tiktok_pipeline.lineage`)."""
        from tiktok_pipeline.lineage import operator_lineage

        return operator_lineage(self.endpoint)

    @staticmethod
    def _api_summary(hook: TikTokDisplayHook) -> dict[str, Any]:
        return {
            "api_calls": dict(hook.calls),
            "retries": dict(hook.retries),
            "token_refreshes": hook.refreshes,
            "sanitised_values": len(hook.issues),
        }


class TikTokUserInfoToPostgresOperator(_TikTokToPostgresOperator):
    """
    Fetch one account's profile and upsert today's row of ``profile_snapshots``.

    The snapshot is labelled with the UTC date on which it was captured, never with the run's
    logical date: re-running last week's run writes today's numbers under today's date.

    :param open_id: the account.
    :param fields: user fields to request; default every field the account's scopes allow.
    """

    template_fields: Sequence[str] = ("fields",)
    endpoint = "/v2/user/info/"
    operator_extra_links = PROFILE_LINKS

    def done_in_run(self, warehouse: Any, context: Any) -> bool:
        """Today's snapshot exists and was checked (written, or found unchanged) since the run's start."""
        since = _run_after(context)
        return since is not None and _exists(
            warehouse,
            "SELECT 1 FROM tiktok.profile_snapshots WHERE open_id = :o AND snapshot_date = :today "
            "AND coalesce(checked_at, captured_at) >= :since",
            o=self.open_id,
            today=datetime.now(UTC).date(),
            since=since,
        )

    def __init__(self, *, fields: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fields = fields
        #: Read by the *TikTok profile* link when the task ends (never a template field).
        self.profile_deep_link: str | None = None

    def _execute_batch(self, context: Context) -> dict[str, Any]:
        try:
            return super()._execute_batch(context)
        finally:
            self.profile_deep_link = None  # a batch's task has no one profile to link to, not its last account's

    def execute_account(self, context: Context) -> dict[str, Any]:
        hook = self._hook(context)
        with _failing_fast(self), self._reconnect_alert():
            user = hook.get_user_info(self.open_id, self.fields)
            self.profile_deep_link = user.get("profile_deep_link")
            captured_at = datetime.now(UTC)
            warehouse = warehouse_of(hook)
            warehouse.upsert_account_profile(self.open_id, user, now=captured_at)
            written = warehouse.upsert_profile_snapshot(self.open_id, user, captured_at=captured_at)
        from tiktok_pipeline.archive import avatar_items

        archive = self._archive(
            warehouse.engine, avatar_items(self.open_id, user), captured_at, api_url=hook.config.base_url
        )
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
        summary = {
            "open_id": self.open_id,
            "snapshot_date": captured_at.date().isoformat(),
            "written": bool(written),
            "fields": sorted(user),
            "archive": archive,
            **self._api_summary(hook),
        }
        self._count_rows(summary)
        return summary


class TikTokVideoListToPostgresOperator(_TikTokToPostgresOperator):
    """
    Page through one account's videos into ``videos`` and ``video_snapshots``, then judge its removals.

    What a run does is :func:`tiktok_pipeline.sync.sync_videos`; how removals are decided is
    :mod:`tiktok_pipeline.removals`.

    :param mode: ``recent`` (newest videos within ``lookback_days``) or ``whole_history`` (every
        video, resumable). The old names ``incremental`` and ``full`` are still accepted.
    :param lookback_days: how far back a ``recent`` run looks (default 7); unused by ``whole_history``.
    """

    template_fields: Sequence[str] = ("mode", "lookback_days")
    endpoint = "/v2/video/list/"

    def done_in_run(self, warehouse: Any, context: Any) -> bool:
        """A sync of this mode listed and finished since the run's start (``run_after``).

        Listed, too: a sync whose listing ended in an earlier run is finished by the next one
        before it lists afresh (:func:`~tiktok_pipeline.sync.sync_videos`), and if that listing
        fails, the finished stale sync is all this run has recorded for the account.
        """
        since = _run_after(context)
        return since is not None and _exists(
            warehouse,
            "SELECT 1 FROM tiktok.sync_state WHERE open_id = :o AND mode = :mode AND finished_at >= :since "
            "AND listed_at >= :since",
            o=self.open_id,
            mode=run_mode(self.mode),
            since=since,
        )

    def __init__(self, *, mode: str = "recent", lookback_days: int | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self.lookback_days = lookback_days

    def execute_account(self, context: Context) -> dict[str, Any]:
        try:
            mode = run_mode(self.mode, log=self.log)
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None
        given = self.lookback_days
        # An empty form field renders as "None" through "{{ params.lookback_days }}".
        unset = given is None or (isinstance(given, str) and given.strip() in ("", "None"))
        lookback = DEFAULT_LOOKBACK_DAYS if unset else _whole_number(given, "lookback_days", 1, 3650)
        if not unset and mode == "full":
            self.log.info("lookback_days=%s is not used by mode whole_history (it reads every video)", lookback)
        hook = self._hook(context, bulk=mode == "full")
        now = datetime.now(UTC)
        with _failing_fast(self), self._reconnect_alert():
            warehouse = warehouse_of(hook)
            summary = sync_videos(
                hook,
                warehouse,
                self.open_id,
                mode=mode,
                lookback_days=lookback,
                context=context,
                now=now,
                log=self.log,
            )
        summary = {**summary, **self._api_summary(hook)}
        self._count_rows(summary)
        return summary


class TikTokVideoQueryToPostgresOperator(_TikTokToPostgresOperator):
    """
    Refresh cover URLs and counts with ``video/query``, 20 ids a call.

    Besides the stale covers it asks about the account's pending removals and the videos marked
    removed in the last 7 days (none when there are none); see :mod:`tiktok_pipeline.removals`.

    :param video_ids: ids to query; by default the account's videos whose cover expires within
        ``horizon_minutes`` or has expired, its pending removals and its recent removals.
    :param horizon_minutes: how soon a cover must expire to be refreshed.
    """

    template_fields: Sequence[str] = ("video_ids", "horizon_minutes")
    endpoint = "/v2/video/query/"

    def __init__(
        self,
        *,
        video_ids: Sequence[str] | None = None,
        horizon_minutes: int = 60,
        max_covers: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.video_ids = video_ids
        self.horizon_minutes = horizon_minutes
        self.max_covers = max_covers

    def execute_account(self, context: Context) -> dict[str, Any]:
        horizon = _whole_number(self.horizon_minutes, "horizon_minutes", 0, 7 * 24 * 60)
        hook = self._hook(context)
        now = datetime.now(UTC)
        with _failing_fast(self), self._reconnect_alert():
            warehouse = warehouse_of(hook)
            cap = self.max_covers if self.max_covers is not None else max_covers_setting()
            done = refresh_covers(
                hook,
                warehouse,
                self.open_id,
                video_ids=self.video_ids,
                horizon=timedelta(minutes=horizon),
                now=now,
                max_covers=cap,
            )
        if done.left:
            self.log.warning(
                "Cover refresh of %s: %d stale covers left for a later run (at most %d a run, "
                "[tiktok] max_covers_per_account); the most recent and most viewed went first",
                self.open_id,
                done.left,
                cap,
            )
        from tiktok_pipeline.archive import cover_items

        archive = self._archive(
            warehouse.engine, cover_items(self.open_id, done.answers), now, api_url=hook.config.base_url
        )
        self.log.info(
            "Cover refresh of %s: %d queried (%d pending or recently removed), %d updated, %d restored; "
            "%d left out: %d newly pending, %d confirmed removed, %d held",
            self.open_id,
            done.requested,
            len(done.rechecked),
            done.updated,
            done.restored,
            done.missing,
            done.pending,
            done.removed,
            done.held,
        )
        summary = {
            "open_id": self.open_id,
            "requested": done.requested,
            "updated": done.updated,
            "rechecked": len(done.rechecked),
            "restored": done.restored,
            "removal_suspects": done.missing,
            "removals_pending": done.pending,
            "removed": done.removed,
            "removals_held": done.held,
            "snapshots_written": done.snapshots_written,
            "captures": done.captures,
            "covers_left": done.left,
            "archive": archive,
            **self._api_summary(hook),
        }
        self._count_rows(summary)
        return summary
