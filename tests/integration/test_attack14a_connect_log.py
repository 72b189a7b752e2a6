"""attack14a: the connect DAG's "Connected account ..." line names a hostile account on one line.

It put the display name TikTok returns into the task log verbatim: a name holding a line break wrote
a second, forged line into the log on-call reads (and ESC sequences, U+202E, 40 kB of text). It now
names the account through ``tiktok_provider.errors.account_label``, like every other log line.
Simulator over real HTTP, real Postgres.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

import pytest

pytestmark = pytest.mark.integration

FORGED = "2026-03-02T09:30:00Z [error] Connected account oid-someone-else with scopes video.list"
HOSTILE_NAME = "Mia\n" + FORGED + "\r\x1b[2J\u202e)emit( " + "\u05e9" * 20_000
BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}


def test_the_connected_line_names_a_hostile_account_on_one_readable_line(
    sim: Any, hook: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from tiktok_pipeline.connect import connect_account
    from tiktok_tools.simaccounts import connect_conf

    open_id = sim.admin.create_account(videos=0, display_name=HOSTILE_NAME)["open_id"]
    caplog.set_level(logging.INFO, logger="tiktok_pipeline.connect")
    result = connect_account(connect_conf(sim.admin, open_id), tiktok_conn_id=hook.tiktok_conn_id)
    assert result["open_id"] == open_id and result["display_name"] == HOSTILE_NAME  # the XCom keeps the data

    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Connected account")]
    bad = sorted({c for c in line if unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in BIDI})
    assert bad == [], f"control/bidi characters in the log line: {[hex(ord(c)) for c in bad]}"
    assert len(line) < 1_000, f"a {len(line)}-character log line"
