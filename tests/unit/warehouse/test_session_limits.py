"""The warehouse sessions' bounds: reading ``[tiktok]``, the libpq options, and the timeout messages."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest

from tiktok_warehouse import db
from tiktok_warehouse.db import SessionLimits


@pytest.fixture(autouse=True)
def _no_configured_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in db.DEFAULTS:
        monkeypatch.delenv(db.env_var(option), raising=False)


def test_defaults_bound_every_session_well_below_the_tasks_execution_timeout() -> None:
    from tiktok_pipeline.common import DEFAULT_ARGS

    limits = SessionLimits.from_config()
    assert limits == SessionLimits(lock_timeout=60, statement_timeout=1800, idle_in_transaction_timeout=600)
    assert limits.options() == (
        "-c lock_timeout=60000 -c statement_timeout=1800000 -c idle_in_transaction_session_timeout=600000"
    )
    budget = DEFAULT_ARGS["execution_timeout"].total_seconds()
    assert 0 < limits.lock_timeout < limits.statement_timeout <= budget / 4
    assert 0 < db.setting(db.MIGRATION_LOCK_TIMEOUT_OPTION) < limits.lock_timeout


def test_the_settings_come_from_airflow_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__TIKTOK__WAREHOUSE_LOCK_TIMEOUT", "2.5")
    monkeypatch.setenv("AIRFLOW__TIKTOK__WAREHOUSE_STATEMENT_TIMEOUT", "off")
    monkeypatch.setenv("AIRFLOW__TIKTOK__WAREHOUSE_IDLE_IN_TRANSACTION_TIMEOUT", "0")
    monkeypatch.setenv("AIRFLOW__TIKTOK__MIGRATION_LOCK_TIMEOUT", "30s")
    limits = SessionLimits.from_config()
    assert limits.gucs() == {
        "lock_timeout": "2500",
        "statement_timeout": "0",
        "idle_in_transaction_session_timeout": "0",
    }
    assert db.setting(db.MIGRATION_LOCK_TIMEOUT_OPTION) == 30


@pytest.mark.parametrize("raw", ["soon", "-1", "nan", "inf", "0.0001", str(8 * 24 * 3600), "1min"])
def test_a_bad_value_names_the_option_and_what_it_takes(raw: str) -> None:
    with pytest.raises(ValueError, match=r"\[tiktok\] warehouse_lock_timeout .*0 / off") as info:
        db.parse_seconds(db.LOCK_TIMEOUT_OPTION, raw)
    assert repr(raw) in str(info.value)


def test_a_sub_millisecond_bound_never_rounds_to_postgres_no_bound() -> None:
    assert SessionLimits(lock_timeout=0.0014).gucs()["lock_timeout"] == "1"


def test_our_options_come_after_the_connections_own_so_they_win() -> None:
    limits = SessionLimits(lock_timeout=5, statement_timeout=0, idle_in_transaction_timeout=0)
    ours = "-c lock_timeout=5000 -c statement_timeout=0 -c idle_in_transaction_session_timeout=0"
    assert db.merge_options(None, limits) == ours
    assert db.merge_options("-c search_path=tiktok", limits) == f"-c search_path=tiktok {ours}"


class _Diag(SimpleNamespace):
    pass


class _PgError(Exception):
    """Shaped like a psycopg error: ``sqlstate`` (psycopg 3) and ``diag``."""

    def __init__(self, sqlstate: str, primary: str, context: str | None = None) -> None:
        super().__init__(f"{primary}\nCONTEXT:  {context}" if context else primary)
        self.sqlstate = sqlstate
        self.diag = _Diag(message_primary=primary, context=context)


ROW_WAIT = _PgError(
    "55P03", "canceling statement due to lock timeout", 'while updating tuple (0,7) in relation "accounts"'
)
TABLE_WAIT = _PgError("55P03", "canceling statement due to lock timeout")
SLOW = _PgError("57014", "canceling statement due to statement timeout")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ROW_WAIT, "lock"),
        (SLOW, "statement"),
        (_PgError("55P03", 'could not obtain lock on row in relation "accounts"'), None),  # NOWAIT: not our bound
        (_PgError("57014", "canceling statement due to user request"), None),  # pg_cancel_backend
        (_PgError("25P03", "terminating connection due to idle-in-transaction timeout"), "idle"),
        (_PgError("23505", "duplicate key value violates unique constraint"), None),
    ],
)
def test_only_postgres_ending_a_statement_at_our_bound_counts(error: Exception, kind: str | None) -> None:
    assert db.timeout_kind(error) == kind


def test_a_row_lock_wait_names_the_table_the_row_the_holder_the_setting_and_what_next() -> None:
    holders = ("pid 4242 (user admin, application 'psql', idle in transaction for 75s; holds accounts RowShareLock)",)
    message = db.timeout_message("lock", ROW_WAIT, SessionLimits(lock_timeout=60), holders)
    assert "[tiktok] warehouse_lock_timeout (1 min)" in message
    assert "a row lock on accounts (tuple 0,7" in message
    assert holders[0] in message
    assert "Nothing of that transaction was stored" in message and "Airflow retries it" in message
    assert "pg_terminate_backend" in message and "AIRFLOW__TIKTOK__WAREHOUSE_LOCK_TIMEOUT" in message


def test_a_table_lock_wait_says_postgres_did_not_name_the_table() -> None:
    message = db.timeout_message("lock", TABLE_WAIT, SessionLimits(lock_timeout=2.5))
    assert "(2.5s) for a table lock (Postgres does not say which table)" in message
    assert "No other session holds a conflicting lock now" in message


def test_a_statement_timeout_names_its_setting_and_the_execution_timeout_it_protects() -> None:
    message = db.timeout_message("statement", SLOW, SessionLimits(statement_timeout=1800))
    assert "[tiktok] warehouse_statement_timeout (30 min)" in message
    assert "AIRFLOW__TIKTOK__WAREHOUSE_STATEMENT_TIMEOUT" in message and "execution_timeout" in message


def test_the_error_is_a_retryable_operational_error_without_sql_or_parameters() -> None:
    from sqlalchemy.exc import OperationalError

    from tiktok_provider.errors import is_retryable

    error = db.WarehouseLockTimeout("waited", "UPDATE tiktok.accounts SET x=%(x)s", {"x": "ciphertext"}, ROW_WAIT)
    assert isinstance(error, OperationalError) and is_retryable(error)
    assert str(error) == "waited" and "ciphertext" not in str(error) and "UPDATE" not in str(error)
    assert error.sqlstate == "55P03"
    plain = db.WarehouseLockTimeout("waited", None, None, RuntimeError("lock timeout"), relation="accounts")
    again = pickle.loads(pickle.dumps(plain))  # an error crossing a process boundary keeps its text
    assert type(again) is db.WarehouseLockTimeout and str(again) == "waited" and again.relation == "accounts"
