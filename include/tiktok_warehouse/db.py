"""Engines for the warehouse database, built from an Airflow Postgres connection.

Every session of an engine from :func:`get_engine` is bounded on the server: how long one statement
waits for a lock (``lock_timeout``), how long one statement runs (``statement_timeout``) and how
long a transaction may sit idle (``idle_in_transaction_session_timeout``). Airflow's
``execution_timeout`` is a Python signal handler, which runs only once libpq returns: without these
bounds a task whose write waits on another session's lock (another task, an admin's open psql
transaction, a migration) hangs past its timeout and keeps its pool slot. With them, Postgres
cancels the statement, the transaction rolls back (nothing of it is stored), and the task fails
with :class:`WarehouseLockTimeout` / :class:`WarehouseStatementTimeout`: retryable, naming what
was waited on and the setting to change. Set in ``[tiktok]`` (``AIRFLOW__TIKTOK__…``), in seconds,
``0`` (or ``off``) for no bound:

- ``warehouse_lock_timeout`` (default 60),
- ``warehouse_statement_timeout`` (default 1800),
- ``warehouse_idle_in_transaction_timeout`` (default 600).

Migrations set their own bounds (:mod:`tiktok_warehouse.migrate`): ``migration_lock_timeout``
(default 15) and no statement bound.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from tiktok_provider.errors import escaped

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine, ExceptionContext

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "tiktok_warehouse"
CONFIG_SECTION = "tiktok"

ENGINE_KWARGS = {
    # A task may start long after the pool last used a connection (or Postgres restarted).
    "pool_pre_ping": True,
    # Drop connections before server-side idle timeouts or load balancers cut them.
    "pool_recycle": 1800,
    "pool_size": 5,
    "max_overflow": 5,
    # Shows up in pg_stat_activity, so a DBA can tell our sessions from Airflow's own.
    "connect_args": {"application_name": "tiktok_warehouse"},
}

#: ``[tiktok]`` option -> default seconds (0: no bound).
LOCK_TIMEOUT_OPTION = "warehouse_lock_timeout"
STATEMENT_TIMEOUT_OPTION = "warehouse_statement_timeout"
IDLE_TIMEOUT_OPTION = "warehouse_idle_in_transaction_timeout"
MIGRATION_LOCK_TIMEOUT_OPTION = "migration_lock_timeout"
DEFAULTS = {
    # Our own transactions hold row locks for milliseconds: a minute of waiting means someone else
    # (an admin's open transaction, a migration, a VACUUM FULL) holds the table; retry later.
    LOCK_TIMEOUT_OPTION: 60.0,
    # A page of videos, a snapshot, a marts refresh: seconds to minutes. Well below the tasks'
    # execution_timeout (2 h), so a runaway statement ends and the task's own timeout can fire.
    STATEMENT_TIMEOUT_OPTION: 1800.0,
    # No code of ours idles inside a transaction; a stuck worker that does must not keep its locks.
    IDLE_TIMEOUT_OPTION: 600.0,
    # A migration waiting for a lock queues every DAG query on that table behind it: give up soon.
    MIGRATION_LOCK_TIMEOUT_OPTION: 15.0,
}
MAX_SECONDS = 7 * 24 * 3600.0
_OFF = {"0", "off", "none", "no", "false"}

#: SQLSTATEs of the bounds, and the first words Postgres gives each (others share the code:
#: ``NOWAIT`` also raises 55P03, ``pg_cancel_backend`` 57014).
LOCK_TIMEOUT = "55P03"
STATEMENT_TIMEOUT = "57014"
IDLE_TIMEOUT = "25P03"
#: An execution option: this connection's caller explains timeouts itself (a migration).
OWN_TIMEOUT_MESSAGES = "tiktok_own_timeout_messages"
_RELATION = re.compile(r'relation "([^"]+)"')
_TUPLE = re.compile(r"tuple \((\d+,\d+)\)")
#: Modes that block a whole table (a row lock's holder shows only a weak mode on its table).
_TABLE_BLOCKING_MODES = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
#: Every table lock mode: what blocks a statement that needs ACCESS EXCLUSIVE (a migration's ALTER).
ALL_LOCK_MODES = (
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    *_TABLE_BLOCKING_MODES,
)


def parse_seconds(option: str, raw: str | None) -> float:
    """Return ``[tiktok] option`` in seconds: a number, or ``0``/``off`` for no bound; blank is the default."""
    text = (raw or "").strip().lower()
    if not text:
        return DEFAULTS[option]
    if text in _OFF:
        return 0.0
    try:
        seconds = float(text.removesuffix("s"))
    except ValueError:
        raise ValueError(
            f"[{CONFIG_SECTION}] {option} must be a number of seconds, or 0 / off for no bound; got {raw!r}"
        ) from None
    if not math.isfinite(seconds) or not 0.001 <= seconds <= MAX_SECONDS:
        raise ValueError(
            f"[{CONFIG_SECTION}] {option} must be between 0.001 and {MAX_SECONDS:.0f} seconds, or 0 / off "
            f"for no bound; got {raw!r}"
        )
    return seconds


def setting(option: str) -> float:
    """Return ``[tiktok] option`` (one of :data:`DEFAULTS`) in seconds from Airflow's configuration."""
    from airflow.configuration import conf

    return parse_seconds(option, conf.get(CONFIG_SECTION, option, fallback=""))


def describe_seconds(seconds: float) -> str:
    """``60s``, ``30 min``, ``no bound``: how messages state a bound."""
    if seconds <= 0:
        return "no bound"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:g}s"


def env_var(option: str) -> str:
    return f"AIRFLOW__{CONFIG_SECTION.upper()}__{option.upper()}"


@dataclass(frozen=True)
class SessionLimits:
    """Server-side bounds of a warehouse session, in seconds (0: no bound)."""

    lock_timeout: float = DEFAULTS[LOCK_TIMEOUT_OPTION]
    statement_timeout: float = DEFAULTS[STATEMENT_TIMEOUT_OPTION]
    idle_in_transaction_timeout: float = DEFAULTS[IDLE_TIMEOUT_OPTION]

    @classmethod
    def from_config(cls) -> SessionLimits:
        """The bounds configured in ``[tiktok]`` (``AIRFLOW__TIKTOK__…``)."""
        return cls(
            lock_timeout=setting(LOCK_TIMEOUT_OPTION),
            statement_timeout=setting(STATEMENT_TIMEOUT_OPTION),
            idle_in_transaction_timeout=setting(IDLE_TIMEOUT_OPTION),
        )

    def gucs(self) -> dict[str, str]:
        """The Postgres settings, in milliseconds (Postgres reads 0 as no bound)."""
        return {
            "lock_timeout": _ms(self.lock_timeout),
            "statement_timeout": _ms(self.statement_timeout),
            "idle_in_transaction_session_timeout": _ms(self.idle_in_transaction_timeout),
        }

    def options(self) -> str:
        """The libpq ``options`` that set them when a session starts."""
        return " ".join(f"-c {name}={value}" for name, value in self.gucs().items())


def _ms(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)) if seconds > 0 else 0)


def merge_options(given: str | None, limits: SessionLimits) -> str:
    """Return libpq ``options`` with ours after any the connection already gives (the later ``-c`` wins)."""
    return f"{given} {limits.options()}".strip() if given else limits.options()


# -- errors ------------------------------------------------------------------------------------


class WarehouseTimeout(OperationalError):
    """Postgres cancelled a warehouse statement at one of our bounds; its transaction rolled back.

    An ``OperationalError`` still (callers that retry transient database errors retry it), whose
    text is ours: what was waited on, the setting, what to do; never the SQL or its parameters.
    """

    #: Trying again later can help (the protocol of ``tiktok_provider.errors.is_retryable``).
    retryable = True
    option = ""

    def __init__(
        self,
        message: str,
        statement: str | None,
        params: Any,
        orig: BaseException,
        *,
        relation: str | None = None,
        holders: tuple[str, ...] = (),
    ) -> None:
        super().__init__(statement, params, orig, hide_parameters=True)
        self.message = message
        self.relation = relation
        self.holders = holders
        self.sqlstate = sqlstate_of(orig)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Any:
        return type(self), (self.message, None, None, self.orig), {"relation": self.relation, "holders": self.holders}


class WarehouseLockTimeout(WarehouseTimeout):
    """A statement waited longer than ``[tiktok] warehouse_lock_timeout`` for a lock another session holds."""

    option = LOCK_TIMEOUT_OPTION


class WarehouseStatementTimeout(WarehouseTimeout):
    """A statement ran longer than ``[tiktok] warehouse_statement_timeout``."""

    option = STATEMENT_TIMEOUT_OPTION


class WarehouseIdleTimeout(WarehouseTimeout):
    """The session sat in an open transaction longer than ``[tiktok] warehouse_idle_in_transaction_timeout``."""

    option = IDLE_TIMEOUT_OPTION


def sqlstate_of(orig: BaseException | None) -> str | None:
    """The SQLSTATE of a driver error (psycopg 3 or psycopg2), if it has one."""
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)  # psycopg 3, psycopg2


def _primary(orig: BaseException) -> str:
    diag = getattr(orig, "diag", None)
    text = getattr(diag, "message_primary", None) or str(orig).strip().split("\n", 1)[0]
    return str(text).strip()


def _context(orig: BaseException) -> str:
    diag = getattr(orig, "diag", None)
    return str(getattr(diag, "context", None) or "").strip().split("\n", 1)[0]


def timeout_kind(orig: BaseException | None) -> str | None:
    """``"lock"``, ``"statement"`` or ``"idle"`` when ``orig`` is Postgres ending a statement at that bound."""
    if orig is None:
        return None
    state, primary = sqlstate_of(orig), _primary(orig).lower()
    if state == LOCK_TIMEOUT and "lock timeout" in primary:
        return "lock"
    if state == STATEMENT_TIMEOUT and "statement timeout" in primary:
        return "statement"
    if state == IDLE_TIMEOUT or "idle-in-transaction timeout" in primary:
        return "idle"
    return None


def waited_on(orig: BaseException) -> tuple[str | None, str]:
    """Return ``(relation, phrase)``: what the statement waited for, as far as Postgres says."""
    context = _context(orig)
    relation = _RELATION.search(context)
    tuple_ = _TUPLE.search(context)
    if relation and tuple_:
        return relation.group(1), f'a row lock on {relation.group(1)} (tuple {tuple_.group(1)}; Postgres: "{context}")'
    if relation:
        return relation.group(1), f'a lock on {relation.group(1)} (Postgres: "{context}")'
    return None, "a table lock (Postgres does not say which table)"


def timeout_message(kind: str, orig: BaseException, limits: SessionLimits, holders: tuple[str, ...] = ()) -> str:
    """The text of a :class:`WarehouseTimeout`: what happened, to what, the setting, what to do next."""
    stored = (
        "Nothing of that transaction was stored (Postgres rolled it back); the task fails and Airflow retries "
        "it, and a retry continues where this one stopped."
    )
    relation, what = waited_on(orig)
    where = f"on {relation}" if relation else "that block whole tables"
    who = (
        f" Sessions holding locks {where} now: {'; '.join(holders)}."
        if holders
        else " No other session holds a conflicting lock now (it was released meanwhile, or could not be seen)."
    )
    if kind == "lock":
        option, bound = LOCK_TIMEOUT_OPTION, limits.lock_timeout
        return (
            f"A warehouse statement waited longer than [{CONFIG_SECTION}] {option} ({describe_seconds(bound)}) for "
            f"{what}, held by another session, and Postgres cancelled it.{who} {stored} If the lock stays, end that "
            f"session's transaction (COMMIT/ROLLBACK there, or SELECT pg_terminate_backend(<pid>)); if waits this "
            f"long are expected, raise {option} ({env_var(option)}; 0 waits without bound, past the task's "
            f"execution_timeout)."
        )
    if kind == "statement":
        option, bound = STATEMENT_TIMEOUT_OPTION, limits.statement_timeout
        context = _context(orig)
        lock = f' It was waiting for a lock (Postgres: "{context}").{who}' if "tuple" in context else ""
        return (
            f"A warehouse statement ran longer than [{CONFIG_SECTION}] {option} ({describe_seconds(bound)}) and "
            f"Postgres cancelled it.{lock} {stored} If the warehouse is overloaded or a table needs VACUUM/ANALYZE, "
            f"fix that; if statements this long are expected, raise {option} ({env_var(option)}; keep it below "
            f"the task's execution_timeout, which cannot interrupt a running statement)."
        )
    option, bound = IDLE_TIMEOUT_OPTION, limits.idle_in_transaction_timeout
    return (
        f"The warehouse session sat in an open transaction longer than [{CONFIG_SECTION}] {option} "
        f"({describe_seconds(bound)}) and Postgres closed it. {stored} Raise {option} ({env_var(option)}) only if "
        f"a task must hold a transaction open that long."
    )


# -- who holds the lock ------------------------------------------------------------------------

_HOLDERS_SQL = """
SELECT a.pid, coalesce(a.usename, '?'), coalesce(a.application_name, ''), a.state,
       floor(extract(epoch FROM now() - a.xact_start))::bigint,
       string_agg(DISTINCT c.relname || ' ' || l.mode, ', ')
FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.locktype = 'relation'
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND c.relnamespace <> 'pg_catalog'::regnamespace
  AND l.pid <> pg_backend_pid() AND NOT (l.pid = ANY(%(exclude)s::int[]))
  AND CASE WHEN %(relation)s::text IS NULL THEN l.mode = ANY(%(modes)s::text[])
           ELSE c.relname = %(relation)s::text AND l.mode <> 'AccessShareLock' END
GROUP BY a.pid, a.usename, a.application_name, a.state, a.xact_start
ORDER BY a.xact_start NULLS LAST
LIMIT 5
"""


def lock_holders(
    engine: Engine,
    relation: str | None,
    exclude: tuple[int, ...] = (),
    *,
    modes: tuple[str, ...] = _TABLE_BLOCKING_MODES,
) -> tuple[str, ...]:
    """Describe the sessions holding locks on ``relation`` (when unknown: locks in ``modes``); best effort.

    Runs on a connection of its own, outside the pool (it is called while handling another
    connection's error), bounded to a few seconds. Never the sessions' SQL text: it may hold data.
    """
    try:
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        cparams = {
            **cparams,
            "application_name": "tiktok_warehouse_lock_check",
            "connect_timeout": 5,
            "options": "-c statement_timeout=5000 -c lock_timeout=2000",
        }
        dbapi_conn = engine.dialect.connect(*cargs, **cparams)
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute(_HOLDERS_SQL, {"relation": relation, "exclude": list(exclude), "modes": list(modes)})
            rows = cursor.fetchall()
        finally:
            dbapi_conn.close()
    except Exception as exc:  # the explanation must never hide the error it explains
        log.warning("Could not look up who holds the lock: %s", type(exc).__name__)
        return ()
    described = []
    for pid, user, application, state, seconds, locks in rows:
        # Role and table names are another session's data: Postgres allows any character in them (a
        # line break would forge a line of this message in the task log and the alert).
        facts = [f"user {escaped(user, None)}"]
        if application:
            facts.append(f"application {application!r}")
        if state:
            facts.append(f"{state} for {seconds}s" if seconds is not None else state)
        described.append(f"pid {pid} ({', '.join(facts)}; holds {escaped(locks, None)})")
    return tuple(described)


def _backend_pid(context: ExceptionContext) -> int | None:
    try:
        return int(context.connection.connection.dbapi_connection.info.backend_pid)  # type: ignore[union-attr]
    except Exception:
        return None


def explain_timeouts(engine: Engine, limits: SessionLimits) -> None:
    """Raise :class:`WarehouseTimeout` errors, not bare driver errors, when ``engine``'s sessions hit a bound."""

    @event.listens_for(engine, "handle_error")
    def _explain(context: ExceptionContext) -> BaseException | None:
        orig = context.original_exception
        kind = timeout_kind(orig)
        if kind is None or isinstance(context.sqlalchemy_exception, WarehouseTimeout):
            return None
        if context.connection is not None and context.connection.get_execution_options().get(OWN_TIMEOUT_MESSAGES):
            return None
        relation, _ = waited_on(orig)
        holders: tuple[str, ...] = ()
        if kind == "lock" or (kind == "statement" and "tuple" in _context(orig)):
            pid = _backend_pid(context)
            holders = lock_holders(engine, relation, (pid,) if pid else ())
        cls = {"lock": WarehouseLockTimeout, "statement": WarehouseStatementTimeout}.get(kind, WarehouseIdleTimeout)
        error = cls(
            timeout_message(kind, orig, limits, holders),
            context.statement,
            None,
            orig,
            relation=relation,
            holders=holders,
        )
        error.connection_invalidated = bool(context.is_disconnect)
        log.warning("%s", error.message)
        return error


def bound_sessions(engine: Engine, limits: SessionLimits | None = None) -> Engine:
    """Bound every session ``engine`` opens (``limits``, default ``[tiktok]``) and explain the errors; return it.

    The bounds go into the libpq ``options`` each connection starts with, after any the Airflow
    connection already gives (e.g. ``sqlalchemy_query: {"options": "-c search_path=…"}``).
    """
    limits = limits or SessionLimits.from_config()

    @event.listens_for(engine, "do_connect")
    def _with_limits(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        cparams["options"] = merge_options(cparams.get("options"), limits)

    explain_timeouts(engine, limits)
    return engine


def get_engine(conn_id: str = DEFAULT_CONN_ID, *, limits: SessionLimits | None = None) -> Engine:
    """
    Return an engine for the warehouse described by the Airflow connection ``conn_id``.

    The connection is looked up wherever Airflow looks (secrets backends, ``AIRFLOW_CONN_*``
    environment variables, the metadata database), e.g.
    ``AIRFLOW_CONN_TIKTOK_WAREHOUSE=postgresql://user:pass@host:5432/tiktok``. Its sessions are
    bounded by ``limits`` (default: ``[tiktok]`` configuration; see the module docstring).
    """
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    limits = limits or SessionLimits.from_config()
    hook = PostgresHook(postgres_conn_id=conn_id)
    return bound_sessions(hook.get_sqlalchemy_engine(engine_kwargs=dict(ENGINE_KWARGS)), limits)
