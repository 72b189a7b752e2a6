"""The transfer operators over a fake token store, canned HTTP answers and a fake warehouse: no Postgres, no server.

What is checked is the operators' own part: the hook they build and pass the token store to,
which errors fail the task at once and which are left for Airflow to retry, their arguments
checked before any I/O, and the summary they return. ``tests/integration`` runs them for real.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from canned_tiktok import OPEN_ID, account, fail, ok, page, user
from fake_warehouse import FakeWarehouse

from tiktok_pipeline import operators
from tiktok_provider import errors


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch, make_hook: Any) -> Any:
    """Make the operators use a canned hook and a fake warehouse; return (hook, script, store, warehouse)."""

    def wire(*answers: Any, warehouse: FakeWarehouse | None = None, **kwargs: Any) -> Any:
        hook, script, store, _ = make_hook(*answers, **kwargs)
        wh = warehouse or FakeWarehouse()

        def display_hook(conn_id: str, **kwargs: Any) -> Any:
            hook.built_with = kwargs
            return hook

        monkeypatch.setattr(operators, "display_hook", display_hook)
        monkeypatch.setattr(operators, "warehouse_of", lambda h: wh)
        return hook, script, store, wh

    return wire


def test_user_info_writes_the_profile_and_sums_up_the_calls(wire: Any) -> None:
    _, script, _, wh = wire(user())
    op = operators.TikTokUserInfoToPostgresOperator(
        task_id="snapshot", open_id=OPEN_ID, fields=["display_name", "follower_count"]
    )
    summary = op.execute({})
    assert [name for name, _ in wh.calls] == ["account_profile", "profile_snapshot"]
    assert wh.calls[1][1] == {"display_name": "Ada", "follower_count": 10}
    assert summary["written"] is True
    assert summary["api_calls"] == {"/v2/user/info/": 1}
    assert summary["retries"] == {} and summary["token_refreshes"] == 0
    json.dumps(summary)  # XCom-ready
    assert len(script.requests) == 1


def test_an_error_a_retry_cannot_fix_fails_the_task_at_once(wire: Any) -> None:
    _, script, _, wh = wire(tokens=account(scopes=("user.info.basic",)))
    op = operators.TikTokUserInfoToPostgresOperator(task_id="snapshot", open_id=OPEN_ID, fields=["follower_count"])
    with pytest.raises(AirflowFailException, match=r"user\.info\.stats"):
        op.execute({})
    assert script.requests == [] and wh.calls == []


def test_a_failure_names_the_account_by_name_and_open_id_in_one_clean_error_line(
    wire: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    wire(fail(400, "invalid_params", log_id="LOG-BAD"))
    op = operators.TikTokUserInfoToPostgresOperator(
        task_id="snapshot", open_id=OPEN_ID, account_name="Ada\nLovelace", fields=["display_name"]
    )
    with pytest.raises(AirflowFailException) as caught:
        op.execute({})
    message = str(caught.value)
    assert message.startswith(f"Account 'Ada Lovelace' (open_id {OPEN_ID}): TikTok /v2/user/info/ call")
    assert "log_id=LOG-BAD" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    out = capsys.readouterr().out  # the task's (structlog) logger writes here outside a task runner
    errors_logged = [line for line in out.splitlines() if "[error" in line]
    assert len(errors_logged) == 1 and message in errors_logged[0]
    assert "Traceback" not in out  # no traceback of our own


def test_a_transient_error_is_left_for_airflow_to_retry(wire: Any) -> None:
    wire(*[fail(500, "internal_error")] * 4)
    op = operators.TikTokUserInfoToPostgresOperator(task_id="snapshot", open_id=OPEN_ID, fields=["display_name"])
    with pytest.raises(errors.TikTokServerError):
        op.execute({})


def test_an_account_the_store_does_not_know_fails_with_how_to_connect_it(wire: Any) -> None:
    _, _, store, _ = wire()
    store.tokens.clear()

    def get(open_id: str) -> Any:
        raise errors.AccountNotFound(open_id)

    store.get = get
    op = operators.TikTokUserInfoToPostgresOperator(task_id="snapshot", open_id=OPEN_ID, fields=["display_name"])
    with pytest.raises(AirflowFailException, match="connect it with the tiktok_connect_account DAG"):
        op.execute({})


@pytest.mark.parametrize(("mode", "lookback"), [("sometimes", 7), ("full", "{{ 7*7 }}"), ("incremental", 0)])
def test_video_list_checks_its_templated_arguments_before_any_io(wire: Any, mode: str, lookback: Any) -> None:
    _, script, _, wh = wire()
    op = operators.TikTokVideoListToPostgresOperator(task_id="sync", open_id=OPEN_ID, mode=mode, lookback_days=lookback)
    with pytest.raises(AirflowFailException):
        op.execute({})
    assert script.requests == [] and wh.calls == []


@pytest.mark.parametrize(
    ("mode", "lookback", "window_days"),
    [
        ("whole_history", None, None),
        ("whole_history", "None", None),  # an empty form field, rendered
        ("full", "7", None),  # the old name
        ("recent", "None", 7),  # lookback_days left empty: 7
        ("recent", "3", 3),
        ("incremental", 2, 2),  # the old name
    ],
)
def test_video_list_modes_by_their_new_and_old_names_and_an_optional_lookback(
    wire: Any, capsys: pytest.CaptureFixture[str], mode: str, lookback: Any, window_days: int | None
) -> None:
    wh = FakeWarehouse()
    wire(page(["1"], cursor=1000, has_more=False), warehouse=wh)
    op = operators.TikTokVideoListToPostgresOperator(task_id="sync", open_id=OPEN_ID, mode=mode, lookback_days=lookback)
    op.execute({})
    (name, window_start) = wh.calls[0]
    assert name == "begin_sync"
    if window_days is None:
        assert window_start is None
    else:
        from datetime import UTC, datetime, timedelta

        assert abs(datetime.now(UTC) - timedelta(days=window_days) - window_start) < timedelta(minutes=1)
    deprecated = [line for line in capsys.readouterr().out.splitlines() if "is deprecated" in line]
    assert len(deprecated) == (1 if mode in ("full", "incremental") else 0)


def test_video_list_pages_into_the_warehouse_then_asks_about_suspects(wire: Any) -> None:
    wh = FakeWarehouse(suspects=["9"])
    _, script, _, _ = wire(
        page(["3", "2"], cursor=2000, has_more=True),
        page(["1"], cursor=1000, has_more=False),
        ok({"videos": []}),
        warehouse=wh,
    )
    op = operators.TikTokVideoListToPostgresOperator(task_id="sync", open_id=OPEN_ID, mode="full", lookback_days="7")
    summary = op.execute({})
    assert wh.pages == [["3", "2"], ["1"]]
    assert [name for name, _ in wh.calls] == ["begin_sync", "end_listing", "confirm_removals", "finish_sync"]
    assert wh.calls[2][1] == (["9"], [])
    assert summary["pages"] == 2 and summary["inserted"] == 3
    assert summary["api_calls"] == {"/v2/video/list/": 2, "/v2/video/query/": 1}
    assert script.paths()[-1] == "/v2/video/query/"


def test_video_query_marks_removals_once_with_every_answer_in_hand(wire: Any) -> None:
    stale = [str(n) for n in range(100, 125)]
    wh = FakeWarehouse(stale=stale, recheck=["7"], confirmed=["7", "101"])
    ids = sorted({*stale, "7"})
    answers = [ok({"videos": [{"id": i} for i in ids[s : s + 20] if i not in ("7", "101")]}) for s in (0, 20)]
    wire(*answers, warehouse=wh)
    op = operators.TikTokVideoQueryToPostgresOperator(task_id="covers", open_id=OPEN_ID, horizon_minutes="60")
    summary = op.execute({})
    names = [name for name, _ in wh.calls]
    assert names == ["apply_video_query", "apply_video_query", "mark_removals"]
    assert wh.calls[-1][1] == ["101", "7"]
    assert summary["requested"] == 26 and summary["rechecked"] == 1 and summary["removed"] == 2
    assert summary["removal_suspects"] == 2


class _Run:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id


@pytest.mark.parametrize(
    ("mode", "run_id", "priority"),
    [
        ("full", "manual__2026-01-01", "bulk"),
        ("incremental", "scheduled__2026-01-01", "normal"),
        ("full", "connect__abc__20260101T000000000000", "interactive"),
        ("incremental", "connect__abc__20260101T000000000000", "interactive"),
    ],
)
def test_video_list_hook_has_the_priority_of_its_run(wire: Any, mode: str, run_id: str, priority: str) -> None:
    """A whole-history sync is bulk; a newly connected account's first runs are interactive."""
    hook, _, _, _ = wire(page([], cursor=None, has_more=False))
    op = operators.TikTokVideoListToPostgresOperator(task_id="sync", open_id=OPEN_ID, mode=mode)
    op.execute({"dag_run": _Run(run_id)})
    assert hook.built_with == {"priority": priority}


@pytest.mark.parametrize(
    ("run_id", "priority"), [("scheduled__2026-01-01", "normal"), ("connect__abc__20260101T0000", "interactive")]
)
def test_snapshots_and_cover_refresh_are_normal_unless_a_first_run(wire: Any, run_id: str, priority: str) -> None:
    hook, _, _, _ = wire(user())
    operators.TikTokUserInfoToPostgresOperator(task_id="s", open_id=OPEN_ID, fields=["display_name"]).execute(
        {"dag_run": _Run(run_id)}
    )
    assert hook.built_with == {"priority": priority}
    hook, _, _, _ = wire()
    operators.TikTokVideoQueryToPostgresOperator(task_id="c", open_id=OPEN_ID, video_ids=[]).execute(
        {"dag_run": _Run(run_id)}
    )
    assert hook.built_with == {"priority": priority}


def test_a_batch_runs_every_account_and_fails_at_the_end_naming_the_failed_ones(wire: Any) -> None:
    """One account's failure never stops the others in its batch; the failure names it and why."""
    _, script, store, wh = wire(user(), user())
    store_get = store.get

    def get(open_id: str) -> Any:
        if open_id == "nobody":
            raise errors.AccountNotFound(open_id)
        return store_get(open_id)

    store.get = get
    accounts = [
        {"open_id": OPEN_ID, "account_name": "Ada"},
        {"open_id": "nobody", "account_name": "Bob <b>"},
        {"open_id": OPEN_ID, "account_name": "Ada again"},
    ]
    op = operators.TikTokUserInfoToPostgresOperator(task_id="snapshot", accounts=accounts, fields=["display_name"])
    named = r"'Bob <b>' \(open_id nobody\): AirflowFailException"  # as the account's own error names it
    with pytest.raises(AirflowFailException, match=r"1 of 3 accounts failed.*" + named):
        op.execute({})
    assert len(script.requests) == 2  # the account after the failed one was still done
    assert [name for name, _ in wh.calls].count("profile_snapshot") == 2
    assert op.open_id is None


def test_a_batch_sums_up_its_accounts(wire: Any) -> None:
    wire(user(), user())
    accounts = [{"open_id": OPEN_ID, "account_name": "Ada"}] * 2
    op = operators.TikTokUserInfoToPostgresOperator(task_id="snapshot", accounts=accounts, fields=["display_name"])
    summary = op.execute({})
    assert "/v2/user/info/" in summary["api_calls"]  # (this test's hook is shared, so its counts add up twice)
    assert (summary["batch_accounts"], summary["batch_done"], summary["batch_done_earlier"]) == (2, 2, 0)
    json.dumps(summary)


def test_an_operator_takes_one_account_or_a_batch_not_both() -> None:
    with pytest.raises(TypeError):
        operators.TikTokUserInfoToPostgresOperator(task_id="s", open_id=OPEN_ID, accounts=[])
    with pytest.raises(TypeError):
        operators.TikTokUserInfoToPostgresOperator(task_id="s")


def test_a_batch_keeps_its_label_for_the_grid_and_links_to_no_single_profile(wire: Any) -> None:
    """Airflow renders the map index again when the task ends: it must still name the batch, whatever happened."""
    from canned_tiktok import Canned

    link = "https://www.tiktok.com/@ada"
    wire(user(profile_deep_link=link), Canned(200, {"data": {}, "error": {"code": "ok", "message": "", "log_id": "x"}}))
    accounts = [{"open_id": OPEN_ID, "account_name": "Ada"}] * 2
    op = operators.TikTokUserInfoToPostgresOperator(
        task_id="snapshot", accounts=accounts, account_name="accounts 1-2 of 2", fields=["display_name"]
    )
    with pytest.raises(AirflowFailException, match="1 of 2 accounts failed"):
        op.execute({})
    assert (op.account_name, op.open_id) == ("accounts 1-2 of 2", None)
    assert op.profile_deep_link is None, "a batch's task has no one profile to link to"


def test_a_batch_failure_keeps_each_accounts_log_id_and_next_step_however_long_tiktoks_message(wire: Any) -> None:
    from canned_tiktok import Canned

    wordy = Canned(200, {"data": {}, "error": {"code": "invalid_params", "message": "x" * 2000, "log_id": "log-long"}})
    wire(wordy, wordy)
    accounts = [{"open_id": OPEN_ID, "account_name": "Ada"}, {"open_id": OPEN_ID, "account_name": "Ada again"}]
    op = operators.TikTokUserInfoToPostgresOperator(task_id="snapshot", accounts=accounts, fields=["display_name"])
    with pytest.raises(AirflowFailException) as failure:
        op.execute({})
    message = str(failure.value)
    assert message.count("[log_id=log-long]") == 2, message
    assert message.count(errors.TikTokInvalidParams.advice) == 2, message
    assert len(message) < 2000, "TikTok's own text is cut, not what we say about it"


def test_on_call_hears_of_a_refused_account_when_it_is_refused_not_again_each_time_it_is_met(
    wire: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch retried for another account's sake meets a reauth_required account in every try (a new process)."""
    from dataclasses import replace

    from canned_tiktok import Canned, account

    refused = Canned(
        200, {"error": "invalid_grant", "error_description": "Refresh token has been revoked.", "log_id": "L"}
    )
    wire(fail(401, "access_token_invalid"), refused)
    op = operators.TikTokUserInfoToPostgresOperator(task_id="snapshot", open_id=OPEN_ID, fields=["display_name"])
    caplog.set_level("WARNING")
    with pytest.raises(AirflowFailException, match="authorize the app again"):
        op.execute({})
    assert "TikTok account needs reconnecting" in caplog.text  # (no tiktok_alerts connection: logged unsent)

    caplog.clear()
    _, script, _, _ = wire(tokens=replace(account(), status="reauth_required"))
    with pytest.raises(AirflowFailException, match=r"status is 'reauth_required'.*Nothing was sent to TikTok"):
        op.execute({})
    assert script.requests == []
    assert "TikTok account needs reconnecting" not in caplog.text, "on-call was told when it was marked"


def test_a_batch_names_its_accounts_on_one_line_whatever_their_display_names(
    wire: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A display name is creator text: a line break in it must not forge a line of the task's log."""
    _, _, store, _ = wire()
    forged = "Bob\n[2026-12-06] INFO - Batch of 2 accounts: 2 done"

    def get(open_id: str) -> Any:
        raise errors.AccountNotFound(open_id)

    store.get = get
    op = operators.TikTokUserInfoToPostgresOperator(
        task_id="snapshot", accounts=[{"open_id": "nobody", "account_name": forged}], fields=["display_name"]
    )
    caplog.set_level("INFO")
    with pytest.raises(AirflowFailException) as failure:
        op.execute({})
    assert "\n" not in str(failure.value)
    assert "Bob [2026-12-06] INFO" in str(failure.value)
    assert not [r for r in caplog.records if "\n" in r.getMessage()]


def test_a_batch_task_has_its_accounts_time_limits_added_up_to_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the runner arms for a batch (the unmapped operator): the declared timeout times its accounts,
    at most [tiktok] batch_timeout_hours (24), so that a stuck batch reaches on-call within a day."""
    monkeypatch.delenv("AIRFLOW__TIKTOK__BATCH_TIMEOUT_HOURS", raising=False)
    accounts = [{"open_id": f"o{i}", "account_name": f"A{i}"} for i in range(50)]
    op = operators.TikTokVideoListToPostgresOperator(
        task_id="sync", accounts=accounts, mode="whole_history", execution_timeout=timedelta(hours=2)
    )
    assert (op.account_timeout, op.execution_timeout) == (timedelta(hours=2), timedelta(hours=24))
    few = operators.TikTokVideoListToPostgresOperator(
        task_id="sync", accounts=accounts[:3], mode="whole_history", execution_timeout=timedelta(hours=2)
    )
    assert few.execution_timeout == timedelta(hours=6)
    monkeypatch.setenv("AIRFLOW__TIKTOK__BATCH_TIMEOUT_HOURS", "1")  # never below one account's own limit
    low = operators.TikTokVideoListToPostgresOperator(
        task_id="sync", accounts=accounts, mode="whole_history", execution_timeout=timedelta(hours=2)
    )
    assert low.execution_timeout == timedelta(hours=2)
    monkeypatch.setenv("AIRFLOW__TIKTOK__BATCH_TIMEOUT_HOURS", "forever")
    with pytest.raises(ValueError, match=r"\[tiktok\] batch_timeout_hours"):
        operators.TikTokVideoListToPostgresOperator(task_id="sync", accounts=accounts, execution_timeout=timedelta(1))
    one = operators.TikTokVideoListToPostgresOperator(
        task_id="sync", open_id="o1", execution_timeout=timedelta(hours=2)
    )
    assert (one.account_timeout, one.execution_timeout) == (timedelta(hours=2), timedelta(hours=2))


class MemoryTaskStateStore:
    """Airflow's ``context["task_state_store"]`` of one task instance, kept in a dict (JSON in, JSON out)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(self.values[key]) if key in self.values else default

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self.values[key] = json.dumps(value)


class _Ti:
    def __init__(self, try_number: int) -> None:
        self.try_number = try_number


def test_a_later_try_counts_what_earlier_tries_did_once_and_writes_no_metric_for_it(
    wire: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second try of a batch: the account done by the first is in the totals once, its rows not re-metered."""
    from canned_tiktok import fail

    from tiktok_provider import metrics

    _, _, store, _ = wire(user(), *[fail(500, "internal_error")] * 6, user())
    store.tokens["acct-2"] = store.tokens[OPEN_ID]
    metered: list[tuple[str, int]] = []
    monkeypatch.setattr(metrics, "rows_written", lambda table, n: metered.append((table, n)))
    done: set[str] = set()

    class Snapshot(operators.TikTokUserInfoToPostgresOperator):
        def done_in_run(self, warehouse: Any, context: Any) -> bool:
            return self.open_id in done

        def execute_account(self, context: Any) -> dict[str, Any]:
            result = super().execute_account(context)
            done.add(self.open_id)
            return result

    accounts = [{"open_id": OPEN_ID, "account_name": "Ada"}, {"open_id": "acct-2", "account_name": "Bo"}]
    op = Snapshot(task_id="snapshot", accounts=accounts, fields=["display_name"], retries=0)
    task_state = MemoryTaskStateStore()
    with pytest.raises(AirflowException, match=r"1 of 2 accounts failed \(1 done in this try and 0 in an earlier"):
        op.execute({"task_state_store": task_state, "ti": _Ti(1)})
    assert metered.count(("profile_snapshots", 1)) == 1
    assert list(task_state.values) == ["tiktok.batch_account_counts"], "one row of Airflow's a batch task, not one each"

    summary = op.execute({"task_state_store": task_state, "ti": _Ti(2)})

    assert (summary["batch_done"], summary["batch_done_earlier"], summary["batch_done_earlier_unrecorded"]) == (1, 1, 0)
    assert summary["written"] == 2 and summary["this_try"]["written"] == 1
    assert metered.count(("profile_snapshots", 1)) == 2, "one metric per snapshot written, none for the recalled one"
    json.dumps(summary)


def test_without_a_task_state_store_an_account_done_earlier_is_counted_as_done_with_unknown_rows(wire: Any) -> None:
    wire(user())

    class Snapshot(operators.TikTokUserInfoToPostgresOperator):
        def done_in_run(self, warehouse: Any, context: Any) -> bool:
            return self.account_name == "done"

    accounts = [{"open_id": OPEN_ID, "account_name": "done"}, {"open_id": OPEN_ID, "account_name": "Ada"}]
    summary = Snapshot(task_id="snapshot", accounts=accounts, fields=["display_name"]).execute({})
    assert (summary["batch_done"], summary["batch_done_earlier"], summary["batch_done_earlier_unrecorded"]) == (1, 1, 1)
    assert summary["written"] == 1


def test_an_account_over_its_time_limit_fails_alone_and_the_batch_goes_on(wire: Any) -> None:
    """Each account of a batch has the task's declared execution_timeout as its own limit."""
    import time

    wire(user())

    class Snapshot(operators.TikTokUserInfoToPostgresOperator):
        def execute_account(self, context: Any) -> dict[str, Any]:
            if self.account_name == "Slow":
                while True:  # until the account's limit stops it
                    time.sleep(0.01)
            return super().execute_account(context)

    accounts = [{"open_id": "slow-1", "account_name": "Slow"}, {"open_id": OPEN_ID, "account_name": "Ada"}]
    op = Snapshot(
        task_id="snapshot", accounts=accounts, fields=["display_name"], execution_timeout=timedelta(seconds=0.2)
    )
    with pytest.raises(AirflowException) as failed:
        op.execute({})
    assert not isinstance(failed.value, AirflowFailException), "a retry can help: it goes on from what is stored"
    message = str(failed.value)
    assert message.startswith("1 of 2 accounts failed (1 done in this try"), message
    assert "'Slow' (open_id slow-1): AccountTimeLimitReached: timed out after 0:00:00.200000" in message


def test_when_the_batch_task_itself_times_out_its_log_says_how_far_it_got(
    wire: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    """Airflow's own timeout of the batch (SIGALRM -> AirflowTaskTimeout) still fails it, after a line for on-call."""
    import signal
    import time

    from airflow.sdk.exceptions import AirflowTaskTimeout

    wire(user())

    class Snapshot(operators.TikTokUserInfoToPostgresOperator):
        def execute_account(self, context: Any) -> dict[str, Any]:
            if self.account_name == "Slow":
                while True:
                    time.sleep(0.01)
            return super().execute_account(context)

    def task_timeout(signum: int, frame: object) -> None:
        raise AirflowTaskTimeout("Timeout")

    accounts = [
        {"open_id": OPEN_ID, "account_name": "Ada"},
        {"open_id": "slow-1", "account_name": "Slow"},
        {"open_id": "later", "account_name": "Later"},
    ]
    op = Snapshot(task_id="snapshot", accounts=accounts, fields=["display_name"], execution_timeout=timedelta(hours=1))
    left, _ = signal.getitimer(signal.ITIMER_REAL)  # pytest-timeout's, if armed
    before = signal.signal(signal.SIGALRM, task_timeout)
    signal.setitimer(signal.ITIMER_REAL, 0.2)  # as if the batch's 3 h had almost run out
    try:
        with pytest.raises(AirflowTaskTimeout):
            op.execute({})
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
        if left:
            signal.setitimer(signal.ITIMER_REAL, left)
    out = capfd.readouterr()
    [line] = [line for line in (out.out + out.err).splitlines() if "The batch task timed out" in line]
    assert "1 done in this try, 0 already done in an earlier try of this run, 0 failed, 2 not reached" in line
    assert op.open_id is None and op.account_name is None
