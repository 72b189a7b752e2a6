"""Live videos are never marked removed by a routine sync: the audit's issue 11, items 4 to 7, end to end.

Every case runs the DAGs through ``dag.test()`` against the simulator over real HTTP and the real
Postgres, breaks something the way the audit found it broken, and checks that no live video got
``removed_at``, while a truly deleted one still does.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from chaos_support import rows, states, tries, warehouse_contents

pytestmark = pytest.mark.integration

LOG_ID = re.compile(r"log_id=\d{14}[0-9A-F]{20}")


def removed(engine: Any, open_id: str) -> set[str]:
    """The account's videos marked removed."""
    found = rows(engine, "SELECT id FROM tiktok.videos WHERE open_id = :o AND removed_at IS NOT NULL", o=open_id)
    return {r[0] for r in found}


def stored_ids(engine: Any, open_id: str) -> set[str]:
    return {r[0] for r in rows(engine, "SELECT id FROM tiktok.videos WHERE open_id = :o", o=open_id)}


def failure_text(capfd: Any, open_id: str) -> str:
    """The error the failed task logged for the account (the line an on-call engineer reads)."""
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if f"call for account {open_id} failed" in line]
    assert lines, "the task's error must name the account"
    return lines[-1]


def calls(sim: Any, endpoint: str) -> int:
    return sim.admin.stats()["endpoints"].get(endpoint, {}).get("requests", 0)


# -- item 6: {"data": {}} is a contract break, not "no videos" ---------------------------------------


def test_empty_data_on_a_list_page_fails_the_task_and_marks_nothing_removed(
    sim, run_dag, connect, frozen_clock, clean_warehouse, capfd
) -> None:
    open_id = connect(videos=60)
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    before = warehouse_contents(clean_warehouse)
    assert len(before["videos"]) == 60

    sim.admin.set_faults("video_list", queue=[("pass", 1), ("empty_data", 1)])
    run = run_dag("tiktok_video_backfill", mode="full")
    assert states(run)[("sync_videos", 0)] == "failed"
    assert tries(run)[("sync_videos", 0)] == 1, "a contract break is not retried"
    message = failure_text(capfd, open_id)
    assert "data.videos is missing" in message
    assert "/v2/video/list/" in message
    assert LOG_ID.search(message), message
    assert "support" in message, "the error says what to do next"
    assert removed(clean_warehouse, open_id) == set()
    assert warehouse_contents(clean_warehouse) == before, "stored data untouched"

    # Clearing the task resumes and completes; nothing was lost, nothing is marked removed.
    run = run_dag("tiktok_video_backfill", mode="full")
    assert str(run.state) == "success", states(run)
    assert removed(clean_warehouse, open_id) == set()
    assert warehouse_contents(clean_warehouse) == before


def test_empty_data_on_a_cover_query_fails_the_task_and_marks_nothing_removed(
    sim, run_dag, connect, frozen_clock, clean_warehouse, capfd
) -> None:
    open_id = connect(videos=30)
    assert str(run_dag("tiktok_video_backfill", mode="full").state) == "success"
    before = warehouse_contents(clean_warehouse)

    sim.admin.set_faults("video_query", queue=[("empty_data", 1)])
    run = run_dag("tiktok_cover_refresh", horizon_minutes=7 * 60)  # every cover: they all expire within 7 h
    assert states(run)[("refresh_covers", 0)] == "failed"
    assert tries(run)[("refresh_covers", 0)] == 1
    message = failure_text(capfd, open_id)
    assert "data.videos is missing" in message
    assert "/v2/video/query/" in message
    assert LOG_ID.search(message), message
    assert removed(clean_warehouse, open_id) == set()
    assert warehouse_contents(clean_warehouse) == before, "stored data untouched"
