"""What the DAGs share (tiktok_pipeline.common), as pure logic: no Postgres, no simulator."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from tiktok_pipeline import common

HOSTILE = [
    "{{ 7*7 }}",
    "{{ conn.tiktok_default.extra_dejson.token_encryption_key }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{% endfor %}",
    "<script>alert(1)</script>",
    "\u202e\u0645\u0631\u062d\u0628\u0627 {{ 7*7 }}",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_display_name_is_its_own_label_and_the_map_index_shows_it_unrendered(name: str) -> None:
    from airflow.sdk import DAG

    label = common.account_label(name, "someone", "open-id")
    assert label == name
    env = DAG(dag_id="labels", schedule=None).get_template_env()
    task = SimpleNamespace(account_name=label, open_id="open-id")
    assert env.from_string(common.MAP_INDEX_TEMPLATE).render(task=task) == name


def test_a_label_falls_back_to_username_then_open_id_and_is_cut_to_what_the_grid_can_store() -> None:
    assert common.account_label("", "{{ 7*7 }}", "open-id") == "{{ 7*7 }}"
    assert common.account_label("  \n", None, "open-id") == "open-id"
    assert common.account_label(None, None, "open-id") == "open-id"
    long = "{{ 7*7 }}" + "\U0001f600" * 300
    label = common.account_label(long, "someone", "open-id")
    assert len(label) == common.LABEL_LENGTH <= 250  # task_instance.rendered_map_index is VARCHAR(250)
    assert label.endswith("\u2026") and long.startswith(label[:-1])


def test_the_per_account_operators_template_none_of_the_values_select_accounts_gives_them() -> None:
    from tiktok_pipeline import operators as ops

    for operator in (
        ops.TikTokUserInfoToPostgresOperator,
        ops.TikTokVideoListToPostgresOperator,
        ops.TikTokVideoQueryToPostgresOperator,
    ):
        assert set(common.ACCOUNT_KWARGS).isdisjoint(operator.template_fields), operator.__name__


@pytest.mark.filterwarnings("ignore:Task 'per_account' was never mapped")
def test_for_each_account_refuses_an_operator_that_templates_the_account_name() -> None:
    from airflow.sdk import BaseOperator

    class Templating(BaseOperator):
        template_fields = ("account_name",)

        def __init__(self, *, open_id: str, account_name: str | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.open_id, self.account_name = open_id, account_name

    with pytest.raises(TypeError, match=r"Templating has \['account_name'\] in template_fields"):
        common.for_each_account(Templating.partial(task_id="per_account"))


def test_the_checks_warehouse_is_the_warehouse_conn_id_extra_of_the_tiktok_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def tiktok_connection(**extra: Any) -> str:
        return json.dumps({"conn_type": "tiktok", "host": "https://open.tiktokapis.com", "extra": extra})

    monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_ELSEWHERE", tiktok_connection(warehouse_conn_id="warehouse_b"))
    monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_PLAIN", tiktok_connection())
    assert common.WarehouseConnId("tiktok_elsewhere")(context=None, jinja_env=None) == "warehouse_b"
    assert common.WarehouseConnId("tiktok_plain")(context=None, jinja_env=None) == "tiktok_warehouse"


def test_a_check_serialises_the_same_on_every_parse() -> None:
    from airflow.serialization.helpers import serialize_template_field

    check = common.quality_check("check", "SELECT true", what="nothing.")
    assert isinstance(check.conn_id, common.WarehouseConnId)
    assert check.conn_id == common.WarehouseConnId(common.TIKTOK_CONN_ID)
    first = serialize_template_field(check.conn_id, "conn_id")
    assert first == serialize_template_field(common.WarehouseConnId(common.TIKTOK_CONN_ID), "conn_id")
    assert "0x" not in str(first), "no memory address: the DAG's hash must not change between parses"


def _acct(open_id: str, name: str | None, username: str | None, status: str = "active") -> Any:
    return SimpleNamespace(open_id=open_id, display_name=name, username=username, status=status)


ACCOUNTS = [
    _acct("oid-ada", "Ada Lovelace", "ada"),
    _acct("oid-bob-1", "Bob", "bob.cooks"),
    _acct("oid-bob-2", "bob", "bob_travels", status="reauth_required"),
    _acct("oid-q", "x'); DROP TABLE tiktok.videos; --", "quoted"),
]


def test_accounts_are_found_by_open_id_display_name_or_username_ignoring_case_and_spaces() -> None:
    wanted = common.validate_account_refs(
        ["oid-ada", "  ada   lovelace ", "@BOB.cooks", "x'); DROP TABLE tiktok.videos; --"]
    )
    assert common.resolve_accounts(wanted, ACCOUNTS) == (["oid-ada", "oid-bob-1", "oid-q"], [])
    assert common.resolve_accounts(["quoted", "nobody", "oid-nope"], ACCOUNTS) == (["oid-q"], ["nobody", "oid-nope"])


def test_a_name_two_accounts_share_is_an_error_listing_both_with_their_open_ids() -> None:
    with pytest.raises(ValueError) as caught:
        common.resolve_accounts(["BOB"], ACCOUNTS)
    message = str(caught.value)
    assert "'BOB' names 2 accounts" in message
    assert "open_id oid-bob-1 (active)" in message and "open_id oid-bob-2 (reauth_required)" in message
    assert "Give the open_id instead" in message


@pytest.mark.parametrize("value", [["acct\n"], ["tab\there"], [1], ["   "], {"a": 1}])
def test_an_account_entry_is_one_line_of_text(value: Any) -> None:
    with pytest.raises(ValueError, match="account"):
        common.validate_account_refs(value)


def test_a_string_of_accounts_splits_on_lines_and_commas_not_spaces() -> None:
    assert common.validate_account_refs("Ada Lovelace, oid-1\n@bob\n") == ["Ada Lovelace", "oid-1", "@bob"]
    assert common.validate_account_refs(None) is None


def test_above_the_threshold_accounts_are_mapped_in_labelled_batches() -> None:
    from tiktok_pipeline.common import plan_tasks

    accounts = [{"open_id": f"id{i}", "account_name": f"n{i}"} for i in range(5)]
    assert plan_tasks(accounts, 5, 2) == accounts  # at the threshold: one task per account, as before
    plan = plan_tasks(accounts, 2, 2)
    assert [p["account_name"] for p in plan] == ["accounts 1-2 of 5", "accounts 3-4 of 5", "accounts 5-5 of 5"]
    assert [a for p in plan for a in p["accounts"]] == accounts
    big = [{"open_id": f"id{i}", "account_name": ""} for i in range(2000)]
    assert len(plan_tasks(big, 500, 50)) == 40  # far below max_map_length (1024)


def test_a_batch_shares_one_engine_per_warehouse_and_disposes_it(monkeypatch: Any) -> None:
    """A hook per account must not mean engines (and pooled Postgres connections) per account."""
    from tiktok_pipeline import hooks
    from tiktok_warehouse import db

    made: list[Any] = []

    class Engine:
        disposed = False

        def dispose(self) -> None:
            self.disposed = True

    def get_engine(conn_id: str) -> Any:
        made.append(Engine())
        return made[-1]

    monkeypatch.setattr(db, "get_engine", get_engine)
    with hooks.shared_engines():
        first = hooks._engine("tiktok_warehouse")
        assert all(hooks._engine("tiktok_warehouse") is first for _ in range(50))
        assert not first.disposed
    assert len(made) == 1 and first.disposed
    assert hooks._engine("tiktok_warehouse") is not first  # outside a batch: as before


def test_consent_warnings_reach_on_call_once_per_threshold_not_every_day() -> None:
    """An account in its last 30 days is seen by every daily check; on-call hears of each threshold once."""
    from datetime import UTC, datetime, timedelta

    from tiktok_pipeline.common import newly_crossed
    from tiktok_warehouse.accounts_admin import ConsentWarning, days_left, warning_threshold

    expires = datetime(2027, 1, 31, 12, tzinfo=UTC)
    alerted = []
    for day in range(40):  # the daily check, 40 days before the end up to the last day
        now = expires - timedelta(days=40) + timedelta(days=day, minutes=5)
        threshold = warning_threshold(expires, now, (30, 7, 1))
        if threshold is None:
            continue
        warning = ConsentWarning("oid", "Ada", expires, days_left(expires, now), threshold)
        alerted += [(w.threshold, day) for w in newly_crossed([warning], now=now)]
    assert [threshold for threshold, _ in alerted] == [30, 7, 1]


def test_batch_summaries_tell_the_assets_and_the_run_summary_what_per_account_ones_do() -> None:
    """A DAG scheduled on the profile Asset reads accounts and rows from its event, batched or not."""
    import logging

    from tiktok_pipeline.assets import PROFILE_SNAPSHOTS, event_extra
    from tiktok_pipeline.common import summarize
    from tiktok_pipeline.operators import _add_up

    per_account = [
        {"open_id": "a", "written": True, "api_calls": {"/v2/user/info/": 1}},
        {"open_id": "b", "written": False, "api_calls": {"/v2/user/info/": 1}},
        {"open_id": "c", "written": True, "api_calls": {"/v2/user/info/": 1}},
    ]
    batches = [
        {**_add_up(per_account[:2]), "batch_accounts": 2, "batch_done": 2, "batch_done_earlier": 0},
        {**_add_up(per_account[2:]), "batch_accounts": 1, "batch_done": 1, "batch_done_earlier": 0},
    ]
    extra = {k: v for k, v in event_extra(per_account, PROFILE_SNAPSHOTS).items() if k != "snapshot_date"}
    assert extra == {"accounts": 3, "rows": 2}
    assert {k: v for k, v in event_extra(batches, PROFILE_SNAPSHOTS).items() if k != "snapshot_date"} == extra
    log = logging.getLogger(__name__)
    assert summarize(batches, log=log)["accounts"] == summarize(per_account, log=log)["accounts"] == 3


@pytest.mark.parametrize(
    ("count", "above", "size", "fix"),
    [
        (7, 2, 2, "raise [tiktok] accounts_per_batch to at least 3"),  # 4 batches of 2 > 3 tasks
        (5, 10, 2, "lower [tiktok] batch_accounts_above to at most 3"),  # 5 tasks of one account > 3
    ],
)
def test_a_plan_of_more_tasks_than_max_map_length_is_refused_naming_the_setting_to_change(
    count: int, above: int, size: int, fix: str
) -> None:
    from tiktok_pipeline.common import plan_tasks

    accounts = [{"open_id": f"o{n}", "account_name": f"n{n}"} for n in range(count)]
    with pytest.raises(ValueError, match=r"more than \[core\] max_map_length \(3\)") as refused:
        plan_tasks(accounts, above, size, max_tasks=3)
    assert fix in str(refused.value)
    assert len(plan_tasks(accounts, above, size, max_tasks=count)) <= count  # within the limit: planned
