"""Extra links of the transfer operators: their values, and the provider lists them."""

from __future__ import annotations

from typing import Any

import pytest

from tiktok_pipeline.operators import (
    TikTokUserInfoToPostgresOperator,
    TikTokVideoListToPostgresOperator,
    TikTokVideoQueryToPostgresOperator,
)
from tiktok_provider.get_provider_info import get_provider_info
from tiktok_provider.links import AccountLink, RunbookLink, TikTokProfileLink


class Key:
    def __init__(self, dag_id: str, task_id: str) -> None:
        self.dag_id, self.task_id, self.run_id, self.try_number, self.map_index = dag_id, task_id, "r", 1, 0


def test_account_link_goes_to_the_account_card_on_the_accounts_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/")
    op = TikTokUserInfoToPostgresOperator(task_id="snapshot_profile", open_id="abc-1/../x", account_name="Ada")
    link = AccountLink().get_link(op, ti_key=Key("tiktok_profile_snapshot", "snapshot_profile"))  # type: ignore[arg-type]
    assert link == "https://airflow.example.com/tiktok-accounts/#account-abc-1%2F..%2Fx"


def test_runbook_link_is_the_task_page_with_its_docs_or_a_configured_wiki(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "")
    op = TikTokVideoListToPostgresOperator(task_id="sync_videos", open_id="abc")
    key: Any = Key("tiktok_video_backfill", "sync_videos")
    assert RunbookLink().get_link(op, ti_key=key) == "/dags/tiktok_video_backfill/tasks/sync_videos"
    monkeypatch.setenv("AIRFLOW__TIKTOK__RUNBOOK_URL", "https://wiki.example.com/tiktok#old")
    assert RunbookLink().get_link(op, ti_key=key) == "https://wiki.example.com/tiktok#tiktok_video_backfill.sync_videos"


@pytest.mark.parametrize(
    "operator",
    [TikTokUserInfoToPostgresOperator, TikTokVideoListToPostgresOperator, TikTokVideoQueryToPostgresOperator],
)
def test_every_transfer_operator_has_both_links(operator: type) -> None:
    assert {"Runbook", "Account"} <= {link.name for link in operator.operator_extra_links}


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("https://vm.tiktok.com/ZMabc/", True),
        ("https://www.tiktok.com/@ada", True),
        ("javascript:alert(1)//tiktok.com", False),
        ("http://vm.tiktok.com/x", False),
        ("https://tiktok.com.evil.example/x", False),
        ("https://user:pw@www.tiktok.com/x", False),
        ("https://eviltiktok.com/x", False),
        (None, False),
        (42, False),
    ],
)
def test_the_profile_link_is_only_ever_an_https_tiktok_url(value: Any, shown: bool) -> None:
    op = TikTokUserInfoToPostgresOperator(task_id="snapshot_profile", open_id="abc")
    op.profile_deep_link = value
    link = TikTokProfileLink().get_link(op, ti_key=Key("d", "t"))  # type: ignore[arg-type]
    assert link == (value if shown else "")


def test_the_provider_lists_its_links() -> None:
    info = get_provider_info()
    assert set(info["extra-links"]) == {
        "tiktok_provider.links.RunbookLink",
        "tiktok_provider.links.AccountLink",
        "tiktok_provider.links.TikTokProfileLink",
    }
    import importlib

    for path in info["extra-links"]:
        module, name = path.rsplit(".", 1)
        assert issubclass(getattr(importlib.import_module(module), name), RunbookLink.__mro__[1])
