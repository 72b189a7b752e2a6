"""What every TikTok DAG shares: default_args, account selection, data-quality checks.

Connection and pool names live in :mod:`tiktok_pipeline.names` (re-exported here for the DAGs).
``TIKTOK_CONN_ID`` is the one place to point every DAG at another TikTok connection; the warehouse
is never named by a DAG: every task that reads or writes it (the loads, account selection, the checks) asks the TikTok
connection's ``warehouse_conn_id`` extra when it runs, so all of them use the same database.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Param, task

from tiktok_pipeline.names import API_POOL as API_POOL
from tiktok_pipeline.names import CONNECT_DAG_ID, TIKTOK_CONN_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

OPEN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "data-platform",
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(hours=2),
}

#: One entry of the ``accounts`` param: an open_id, a display name or a username (one line, no
#: control characters). It is only ever compared with the warehouse's values in Python.
ACCOUNT_REF = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")

ACCOUNTS_PARAM = Param(
    None,
    type=["null", "array"],
    items={"type": "string", "pattern": ACCOUNT_REF.pattern},
    title="Accounts",
    description="Accounts to process, one per line: the open_id, the display name or the @username "
    "(as the grid and the TikTok accounts page show them; case does not matter). A name two accounts "
    "share fails the run listing both open_ids: use the open_id then. Leave empty for every active account.",
)

#: What select_accounts gives each per-account task, through ``expand_kwargs()``.
ACCOUNT_KWARGS = ("open_id", "account_name", "accounts")
#: The longest account name the grid shows (Airflow stores at most 250 characters of a map index,
#: and fails to record the task's end when the label is longer).
LABEL_LENGTH = 100

#: The map index shows the account's display name in the grid. The name is data: this template
#: only reads the task's attribute, and the attribute is never a template (see ``for_each_account``).
MAP_INDEX_TEMPLATE = "{{ task.account_name or task.open_id }}"

SELECT_ACCOUNTS_DOC = """
### select_accounts
Lists the **active** accounts of the warehouse (`tiktok.accounts`), narrowed to the `accounts`
param when given, for the per-account tasks that follow.

**On failure:**
- the warehouse is unreachable, or the connection named by the `warehouse_conn_id` extra of the
  TikTok connection (default `tiktok_warehouse`) is wrong: check Postgres, then clear this task.
- *token_encryption_key*: the extra of the TikTok connection holds no valid Fernet key. Nothing
  is retried: put back the key the tokens were stored with, then clear this task.

The `accounts` param takes open_ids, display names or @usernames (case does not matter):
- *names N accounts*: two accounts share that name; the message lists them with their open_ids.
  Trigger again with the open_id.
- *no connected account has ...*: nothing matched an entry (the message lists what was given);
  check the spelling against the TikTok accounts page.

An account you named that is connected but not active is logged as a warning and skipped:
reconnect it with `tiktok_connect_account`.
"""


def validate_open_ids(value: Any) -> list[str] | None:
    """Return the list of open_ids from a DAG param, rejecting anything that is not one."""
    if value in (None, "", []):
        return None
    if isinstance(value, str):
        value = [v for v in re.split(r"[\s,]+", value) if v]
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(f"accounts must be a list of open_ids, got {type(value).__name__}")
    # fullmatch: the pattern's "$" (kept for the trigger form's JavaScript) matches before a final "\n".
    bad = [v for v in value if not isinstance(v, str) or not OPEN_ID.fullmatch(v)]
    if bad:
        raise ValueError(f"not valid open_ids: {bad[:5]!r}")
    return list(dict.fromkeys(value))


def validate_account_refs(value: Any) -> list[str] | None:
    """Return the accounts named by a DAG param (open_ids, display names or usernames), in order, once each."""
    if value in (None, "", []):
        return None
    if isinstance(value, str):  # given through the API or the CLI: one per line, or comma-separated
        value = [v.strip() for v in re.split(r"[\n,]+", value) if v.strip()]
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(f"accounts must be a list of open_ids or names, got {type(value).__name__}")
    # fullmatch: the pattern's "$" (kept for the trigger form's JavaScript) matches before a final "\n".
    bad = [v for v in value if not isinstance(v, str) or not ACCOUNT_REF.fullmatch(v) or not v.strip()]
    if bad:
        raise ValueError(f"not valid account names or open_ids (one line each, no control characters): {bad[:5]!r}")
    return list(dict.fromkeys(v.strip() for v in value))


def _folded(name: str | None) -> str:
    return " ".join((name or "").split()).casefold()


def resolve_accounts(wanted: Sequence[str], accounts: Sequence[Any]) -> tuple[list[str], list[str]]:
    """Match what a user typed against accounts (any status): ``(open_ids, unmatched)``.

    An entry matches an account's open_id exactly, else its display name or username (``@`` optional),
    ignoring case and runs of spaces. A name shared by several accounts raises ValueError listing
    them with their open_ids; an entry nothing matches is returned in ``unmatched``.
    """
    by_id = {a.open_id: a for a in accounts}
    found: list[str] = []
    unmatched: list[str] = []
    for entry in wanted:
        if entry in by_id:
            found.append(entry)
            continue
        key = _folded(entry)
        handle = key[1:] if key.startswith("@") else key
        matches = [a for a in accounts if key and (_folded(a.display_name) == key or _folded(a.username) == handle)]
        if len(matches) > 1:
            listed = "; ".join(
                f"{account_label(a.display_name, a.username, a.open_id)!r} @{a.username or '-'} "
                f"open_id {a.open_id} ({a.status})"
                for a in matches
            )
            raise ValueError(f"{entry!r} names {len(matches)} accounts: {listed}. Give the open_id instead")
        if matches:
            found.append(matches[0].open_id)
        else:
            unmatched.append(entry)
    return list(dict.fromkeys(found)), unmatched


def select_accounts_task(tiktok_conn_id: str | None = None) -> Any:
    """The first task of every per-account DAG: the active accounts to fan out over."""
    conn_id = tiktok_conn_id or TIKTOK_CONN_ID

    @task(task_id="select_accounts", doc_md=SELECT_ACCOUNTS_DOC, on_failure_callback=_notifier())
    def select(params: dict[str, Any] | None = None) -> list[dict[str, str]]:
        from airflow.configuration import conf
        from airflow.sdk.exceptions import AirflowFailException

        log = logging.getLogger("airflow.task")
        try:
            chosen = select_accounts((params or {}).get("accounts"), log=log, tiktok_conn_id=conn_id)
        except ValueError as exc:  # a bad accounts param: retrying cannot fix it
            raise AirflowFailException(f"{exc}. Trigger the DAG again with valid accounts.") from None
        try:
            above, size = batching_settings()
            return plan_tasks(chosen, above, size, log=log, max_tasks=conf.getint("core", "max_map_length"))
        except ValueError as exc:  # the settings: retrying cannot fix them either
            raise AirflowFailException(f"{exc}; then clear this task.") from None

    return select()


#: ``[tiktok] batch_accounts_above``: above this many accounts in a run, the per-account tasks are
#: mapped over batches instead (so no run depends on ``max_map_length``, 1024 by default).
BATCH_ABOVE_OPTION = "batch_accounts_above"
DEFAULT_BATCH_ABOVE = 500
#: ``[tiktok] accounts_per_batch``: how many accounts one batch task handles.
BATCH_SIZE_OPTION = "accounts_per_batch"
DEFAULT_BATCH_SIZE = 50


def batching_settings() -> tuple[int, int]:
    """``([tiktok] batch_accounts_above, [tiktok] accounts_per_batch)``, defaults 500 and 50."""
    from airflow.configuration import conf

    values = []
    for option, default in ((BATCH_ABOVE_OPTION, DEFAULT_BATCH_ABOVE), (BATCH_SIZE_OPTION, DEFAULT_BATCH_SIZE)):
        raw = (conf.get("tiktok", option, fallback="") or "").strip()
        value = int(raw) if raw else default
        if not 1 <= value <= 1000:
            raise ValueError(f"[tiktok] {option} must be between 1 and 1000, got {value}")
        values.append(value)
    return values[0], values[1]


def plan_tasks(
    accounts: list[dict[str, str]], above: int, size: int, *, log: Any = None, max_tasks: int | None = None
) -> list[dict[str, Any]]:
    """One mapped task per account up to ``above`` accounts; above that, one per batch of ``size``.

    A batch's label (its map index) says which accounts it holds: ``accounts 51-100 of 2000``.

    :param max_tasks: ``[core] max_map_length``: a plan of more tasks is refused here, saying which
        setting to change, rather than by Airflow when it expands the mapped task.
    """
    total = len(accounts)
    if total <= above:
        plan: list[dict[str, Any]] = list(accounts)
        fix = f"lower [tiktok] {BATCH_ABOVE_OPTION} to at most {max_tasks}"
    else:
        plan = [
            {
                "accounts": accounts[start : start + size],
                "account_name": f"accounts {start + 1}-{min(start + size, total)} of {total}",
            }
            for start in range(0, total, size)
        ]
        fix = f"raise [tiktok] {BATCH_SIZE_OPTION} to at least {-(-total // max_tasks) if max_tasks else size}"
        if log is not None:
            log.info("%d accounts, more than %d: %d batch tasks of up to %d accounts", total, above, len(plan), size)
    if max_tasks is not None and len(plan) > max_tasks:
        raise ValueError(
            f"{total} accounts make {len(plan)} mapped tasks, more than [core] max_map_length ({max_tasks}), "
            f"which Airflow refuses: {fix} (or raise max_map_length)"
        )
    return plan


def for_each_account(partial: Any) -> Any:
    """Map a per-account operator (``Operator.partial(...)``) over the active accounts.

    The accounts are listed through the operator's own ``tiktok_conn_id``. Airflow renders a value
    that ``expand_kwargs()`` takes from XCom as a Jinja template when its key is a template field
    (apache/airflow#32272; so in 3.3), so an operator that templated ``account_name`` would run a
    creator's display name as a template in the worker: such an operator is refused.
    """
    templated = sorted(set(ACCOUNT_KWARGS) & set(partial.operator_class.template_fields))
    if templated:
        raise TypeError(
            f"{partial.operator_class.__name__} has {templated} in template_fields: these come from the "
            "warehouse (a display name is whatever a creator typed) and must never be rendered as Jinja."
        )
    return partial.expand_kwargs(select_accounts_task(partial.kwargs.get("tiktok_conn_id")))


CONSENT_DOC = """
### check_consent
Daily account upkeep, independent of the snapshots: accounts whose refresh token (the creator's
consent, 180 days at TikTok) has run out by the lifetime TikTok stated become `reauth_required` (an
expiry we had to estimate only warns: the next refresh asks TikTok); each active account whose
consent runs out within `[tiktok_accounts] consent_warning_days` (default 30, 7 and 1 days) gets a
WARNING line in this task's log naming it and the day; disconnected accounts older than
`[tiktok_accounts] disconnected_retention_days` (default: keep) are purged, and archived cover and
avatar images that no row refers to any more (what purged accounts left) are deleted from storage.
The TikTok accounts page shows the same.

**On failure:** the warehouse is unreachable or the connection is wrong; check Postgres and clear
this task. Nothing is partly done: each step is one transaction.
"""


def consent_check_task(tiktok_conn_id: str | None = None) -> Any:
    """A daily task: expire lapsed consents, warn before consents run out, apply the retention."""
    conn_id = tiktok_conn_id or TIKTOK_CONN_ID

    @task(task_id="check_consent", doc_md=CONSENT_DOC, retries=1, on_failure_callback=_notifier())
    def check() -> dict[str, Any]:
        from datetime import UTC, datetime

        from airflow.configuration import conf

        from tiktok_pipeline.hooks import display_hook
        from tiktok_warehouse.accounts_admin import (
            CONFIG_SECTION,
            daily_account_check,
            parse_retention_days,
            parse_warning_days,
        )
        from tiktok_warehouse.db import get_engine

        engine = get_engine(display_hook(conn_id).config.warehouse_conn_id)
        now = datetime.now(UTC)
        warning_days = parse_warning_days(conf.get(CONFIG_SECTION, "consent_warning_days", fallback=""))
        summary = daily_account_check(
            engine,
            now=now,
            warning_days=warning_days,
            retention_days=parse_retention_days(conf.get(CONFIG_SECTION, "disconnected_retention_days", fallback="")),
            log=logging.getLogger("airflow.task"),
        )
        summary["alerts_sent"] = _consent_alerts(engine, summary["expired"], now=now, warning_days=warning_days)
        summary.update(_sweep_archive(engine))
        summary.update(_leftover_alerts(engine))
        return summary

    return check()


def _leftover_alerts(engine: Any) -> dict[str, Any]:
    """Send the failure alerts of runs whose alert_digest never ran (e.g. marked failed); never fails the check."""
    from datetime import UTC, datetime

    from airflow.sdk import get_current_context

    from tiktok_pipeline.alert_digest import run_is_over, send_leftovers

    try:
        return send_leftovers(engine, run_is_over=run_is_over(get_current_context()["ti"]), now=datetime.now(UTC))
    except Exception:
        logging.getLogger("airflow.task").warning("Alerts of earlier runs were not sent", exc_info=True)
        return {}


def _sweep_archive(engine: Any) -> dict[str, Any]:
    """Delete archived images no row refers to (what purged accounts left); never fails the check."""
    from tiktok_pipeline.archive import archive_settings
    from tiktok_pipeline.archive_sweep import sweep_unreferenced_blobs

    task_log = logging.getLogger("airflow.task")
    try:
        settings = archive_settings()
    except ValueError as exc:
        task_log.warning("Archived images were not swept: %s", exc)
        return {}
    result = sweep_unreferenced_blobs(engine, conn_id=settings.conn_id)
    if result.failed:
        task_log.warning(
            "%d archived image(s) of purged accounts could not be deleted from %s (first: %s); the next daily "
            "check tries again. Check the storage and its connection ([tiktok] cover_archive_conn_id).",
            len(result.failed),
            settings.base,
            result.failed[0][1],
        )
    return result.summary()


def _notifier() -> Any:
    """The on-call notifier (the ``tiktok_alerts`` connection) as a failure callback."""
    from tiktok_provider.notifications.tiktok import TikTokAlertNotifier

    return TikTokAlertNotifier()


#: How often the consent check runs (it is a task of the daily profile snapshot).
CONSENT_CHECK_PERIOD = timedelta(days=1)


def newly_crossed(warnings: Sequence[Any], *, now: Any, period: timedelta = CONSENT_CHECK_PERIOD) -> list[Any]:
    """The consent warnings whose threshold (30, 7, 1 days before the end) was crossed in the last ``period``.

    The daily check sees an account in its last 30 days every day; on-call hears once per threshold,
    on the first daily check after it is crossed, not every day (the accounts page shows it all along).
    """
    return [w for w in warnings if now - period < w.refresh_expires_at - timedelta(days=w.threshold) <= now]


def _consent_alerts(engine: Any, expired: list[str], *, now: Any, warning_days: Any) -> int:
    """Tell on-call about accounts to reconnect and consents running out; an alert never fails the check."""
    from tiktok_provider.notifications.tiktok import alert_consent_warnings, alert_reconnect_needed
    from tiktok_warehouse.accounts_admin import AccountsAdmin

    try:
        sent = sum(alert_reconnect_needed(o, None, reason="the creator's consent ran out") for o in expired)
        if warning_days is not None:  # the daily check also warns before consents run out
            warnings = AccountsAdmin(engine).consent_warnings(now=now, thresholds=warning_days)
            sent += alert_consent_warnings(newly_crossed(warnings, now=now))
        return sent
    except Exception:
        logging.getLogger("airflow.task").warning("Consent alerts were not sent", exc_info=True)
        return 0


def summary_task(results: Any) -> Any:
    """The last task of every per-account DAG: it runs only when every account and check succeeded."""

    @task(task_id="summarize", doc_md=SUMMARY_DOC)
    def add_up(results: Any) -> dict[str, Any]:
        return summarize(results, log=logging.getLogger("airflow.task"))

    return add_up(results)


def select_accounts(accounts: Any, *, log: Any, tiktok_conn_id: str | None = None) -> list[dict[str, str]]:
    """Return ``[{"open_id", "account_name"}]`` for the active accounts (all, or those named).

    Listing decrypts nothing, but every task after this one needs the token encryption key: a
    missing or malformed key fails here, once and without retries, instead of in every account.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from tiktok_pipeline.hooks import display_hook
    from tiktok_warehouse.tokens import GENERATE_KEY_COMMAND, TokenEncryptionKeyInvalid

    wanted = validate_account_refs(accounts)
    conn_id = tiktok_conn_id or TIKTOK_CONN_ID
    hook = display_hook(conn_id)
    store = None
    problem = "is missing"
    if (hook.config.token_encryption_key or "").strip():
        try:
            store = hook.token_store  # checks the key's form; listing decrypts nothing
        except TokenEncryptionKeyInvalid:
            problem = "is not a valid Fernet key (32 url-safe base64-encoded bytes; several may be comma-separated)"
    if store is None:
        raise AirflowFailException(
            f'The "token_encryption_key" extra of the Airflow connection "{conn_id}" {problem}, so no '
            f"account's tokens can be read and every account task would fail. Put back the key the "
            f"tokens were stored with (a new one, from {GENERATE_KEY_COMMAND}, only if no account is "
            f"connected yet), then clear this task."
        )
    # An account whose consent (refresh token) has run out is marked reauth_required before any
    # task tries it: its tasks could only fail, and the accounts page names it as needing a reconnect.
    from datetime import UTC, datetime

    from tiktok_warehouse.accounts_admin import AccountsAdmin

    expired = AccountsAdmin(store.engine).expire_lapsed_consents(now=datetime.now(UTC))
    _consent_alerts(store.engine, expired, now=None, warning_days=None)
    for open_id in expired:
        log.warning(
            "Account %s: its refresh token has run out; marked reauth_required and skipped. Ask the creator "
            "to reconnect it (TikTok accounts page, or the %s DAG).",
            open_id,
            CONNECT_DAG_ID,
        )
    if wanted:
        from tiktok_warehouse.tables import ACCOUNT_STATUSES

        wanted, unmatched = resolve_accounts(wanted, store.list_accounts(statuses=ACCOUNT_STATUSES))
        if unmatched:
            raise ValueError(
                f"no connected account has the open_id, display name or username {unmatched[:10]!r} "
                f"(the accounts param was {accounts!r:.300}); the TikTok accounts page lists them"
            )
    rows = store.list_accounts(statuses=("active",), open_ids=wanted)
    if wanted:
        found = {r.open_id for r in rows}
        for open_id in wanted:
            if open_id not in found:
                log.warning("Account %s is not connected or not active; skipped (reconnect it first)", open_id)
    return [{"open_id": r.open_id, "account_name": account_label(r.display_name, r.username, r.open_id)} for r in rows]


def account_label(display_name: str | None, username: str | None, open_id: str) -> str:
    """Return the name the grid shows for an account: its display name, else username, else open_id.

    The name is kept as the creator wrote it (it is data, shown as text), only cut to
    ``LABEL_LENGTH`` characters.
    """
    for name in (display_name, username):
        if name and name.strip():
            return name if len(name) <= LABEL_LENGTH else name[: LABEL_LENGTH - 1] + "\u2026"
    return open_id


@dataclass(frozen=True)
class WarehouseConnId:
    """The warehouse connection id of a TikTok connection, resolved when a task runs.

    A callable template field value (Airflow calls it with ``context`` and ``jinja_env`` and uses
    what it returns, unrendered): given as a SQL operator's ``conn_id``, the operator reads the
    database the TikTok connection's loads write to, its ``warehouse_conn_id`` extra, found by
    the same code as the hook's.
    """

    tiktok_conn_id: str

    def __call__(self, context: Context | None = None, jinja_env: Any = None) -> str:
        from tiktok_pipeline.hooks import display_hook

        return display_hook(self.tiktok_conn_id).config.warehouse_conn_id


def quality_check(task_id: str, sql: str, *, what: str, tiktok_conn_id: str | None = None) -> Any:
    """A data-quality check on the warehouse that runs even when some account failed.

    It reads the warehouse of the TikTok connection (its ``warehouse_conn_id`` extra), the one the
    loads write to; the *Rendered Template* tab shows which connection that was.

    :param what: the invariants the check's SQL asserts, for its runbook.
    """
    from airflow.providers.common.sql.operators.sql import SQLCheckOperator

    return SQLCheckOperator(
        task_id=task_id,
        conn_id=WarehouseConnId(tiktok_conn_id or TIKTOK_CONN_ID),
        sql=sql,
        doc_md=CHECK_DOC.format(task_id=task_id, what=what),
        retries=1,
        trigger_rule="all_done",
        on_failure_callback=_notifier(),
    )


SUMMARY_DOC = """
### summarize
Adds up what the per-account tasks reported (rows, pages, API calls, retries, token refreshes)
and logs it; its return value is the run's summary.

It only runs when every account task and the checks succeeded, so **this task being
`upstream_failed` is how the run shows that some account failed**: look for the red account
task in the grid, read its log, follow its runbook, and clear it. This task then runs on its own.
"""


def summarize(results: Any, *, log: Any) -> dict[str, Any]:
    """Add up the per-account summaries returned by the transfer operators."""
    from tiktok_pipeline.assets import accounts_in

    # Index, don't iterate: iterating a lazy XCom sequence probes one past its end (and logs an error).
    results = [r for r in (results[i] for i in range(len(results))) if isinstance(r, dict)]
    totals: dict[str, Any] = {"accounts": accounts_in(results)}
    for result in results:
        for key, value in result.items():
            if isinstance(value, bool) or key == "cursor":
                continue
            if isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
            elif isinstance(value, dict):
                bucket = totals.setdefault(key, {})
                for inner, count in value.items():
                    bucket[inner] = bucket.get(inner, 0) + count
    log.info("Run summary: %s", totals)
    return totals


CHECK_DOC = """
### {task_id}
Data-quality check on the warehouse after the loads: {what}

**On failure:** the warehouse holds rows that break an invariant; nothing more is loaded until
it is understood. Run the SQL of the *Rendered Template* tab in `psql`, on the database of the
connection its `conn_id` names (the `warehouse_conn_id` extra of the TikTok connection), to see
the offending rows, then fix them (or the code that wrote them) and clear this task.
"""
