"""dbt/sources.yml declares the tiktok schema as it is: every table and mart exists, freshness is
set on real timestamp columns, and the structure is what dbt reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import DateTime

from tiktok_warehouse.tables import MATERIALIZED_VIEW_NAMES, SCHEMA, VIEW_NAMES, metadata

SOURCES = Path(__file__).resolve().parents[3] / "dbt" / "sources.yml"
PERIODS = {"minute", "hour", "day"}
#: Tables left out on purpose: sync internals, the OAuth flow's short-lived states, the alert outbox.
INTERNAL = {"sync_seen_videos", "oauth_states", "rate_budget_slots", "rate_budget_state", "alert_outbox"}


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    document = yaml.safe_load(SOURCES.read_text())
    assert document["version"] == 2
    [tiktok] = document["sources"]
    return tiktok


def check_freshness(freshness: Any) -> None:
    assert set(freshness) <= {"warn_after", "error_after", "filter"}
    for key in ("warn_after", "error_after"):
        rule = freshness[key]
        assert set(rule) == {"count", "period"}
        assert isinstance(rule["count"], int) and rule["count"] > 0
        assert rule["period"] in PERIODS
    warn, error = (freshness[k] for k in ("warn_after", "error_after"))
    assert warn["period"] == error["period"] and warn["count"] < error["count"]


def test_the_source_is_the_tiktok_schema(source: dict[str, Any]) -> None:
    assert source["name"] == "tiktok" and source["schema"] == SCHEMA
    check_freshness(source["freshness"])


def test_every_table_and_mart_is_declared_and_exists(source: dict[str, Any]) -> None:
    declared = [table["name"] for table in source["tables"]]
    assert len(declared) == len(set(declared))
    tables = {table.name for table in metadata.sorted_tables}
    assert set(declared) == (tables - INTERNAL) | set(VIEW_NAMES) | set(MATERIALIZED_VIEW_NAMES)


def test_freshness_uses_a_timestamp_column_of_the_table(source: dict[str, Any]) -> None:
    checked = 0
    for table in source["tables"]:
        freshness = table.get("freshness", source["freshness"])
        if freshness is None:
            continue
        check_freshness(freshness)
        field = table["loaded_at_field"]
        if table["name"] in MATERIALIZED_VIEW_NAMES:
            assert field == "refreshed_at"
        else:
            column = metadata.tables[f"{SCHEMA}.{table['name']}"].c[field]
            assert isinstance(column.type, DateTime) and column.type.timezone
            assert not column.nullable
        checked += 1
    assert checked >= 8


def test_declared_columns_exist(source: dict[str, Any]) -> None:
    for table in source["tables"]:
        for column in table.get("columns", []):
            assert column["name"] in metadata.tables[f"{SCHEMA}.{table['name']}"].c
