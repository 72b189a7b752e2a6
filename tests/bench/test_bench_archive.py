"""The archive bench measures what it says: every cover once, nothing on a second run, and no API
call for the early history (simulator counters)."""

from __future__ import annotations

from typing import Any

import pytest

from tiktok_tools.bench.bench_archive import measure

pytestmark = pytest.mark.bench


def test_measure_archive_and_history(warehouse_engine: Any, sim: Any, hook: Any, connect_account: Any) -> None:
    open_id = connect_account(videos=120)
    result = measure(warehouse_engine, sim, hook, open_id)
    first, second = result["first_run"], result["second_run"]
    assert first["covers"] == second["covers"] == 120
    assert (first["downloaded"], first["blobs_written"]) == (120, 120)
    assert (second["downloaded"], second["not_modified"]) == (0, 120)
    assert first["query_calls"] == second["query_calls"] == 6  # ⌈120 / 20⌉
    assert first["captures"] == second["captures"] == 120
    assert result["history_api_calls"] == 0
    assert result["covers_per_second"] > 0
