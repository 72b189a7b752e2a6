"""Account upkeep alerts from the real warehouse: consent running out, reconnect needed -> a local webhook."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from receivers import http_receiver
from sqlalchemy import text

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _account(engine: Any, open_id: str, name: str, refresh_expires_at: datetime, status: str = "active") -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tiktok.accounts (open_id, display_name, status, connected_at, updated_at,"
                " access_token_enc, refresh_token_enc, access_expires_at, refresh_expires_at)"
                " VALUES (:o, :n, :s, :now, :now, 'x', 'x', :now, :r)"
            ),
            {"o": open_id, "n": name, "s": status, "now": NOW, "r": refresh_expires_at},
        )


def test_one_message_per_account_whose_consent_runs_out_soon(
    clean_warehouse: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiktok_provider.notifications.tiktok import alert_consent_warnings
    from tiktok_warehouse.accounts_admin import AccountsAdmin

    _account(clean_warehouse, "acct-soon", "<script>Ana</script> {{ 7*7 }}", NOW + timedelta(days=6, hours=20))
    _account(clean_warehouse, "acct-later", "Ben", NOW + timedelta(days=200))
    _account(clean_warehouse, "acct-gone", "Cy", NOW + timedelta(days=3), status="reauth_required")
    warnings = AccountsAdmin(clean_warehouse).consent_warnings(now=NOW, thresholds=(30, 7, 1))
    with http_receiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url}))
        assert alert_consent_warnings(warnings) == 1
        [msg] = receiver.json()
    assert msg["kind"] == "consent_expiring"
    assert msg["facts"]["open_id"] == "acct-soon"
    assert "<script>Ana</script> {{ 7*7 }} (acct-soon)" in msg["title"]  # data, as written (JSON, not HTML)
    assert "expires in 7 days (2026-12-12)" in msg["title"]


def test_reconnect_needed_message(test_databases: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tiktok_provider.notifications.tiktok import alert_reconnect_needed

    with http_receiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url}))
        assert alert_reconnect_needed("acct-9", "Dee", reason="refresh token rejected (rft.abcdefghijkl0123456789)")
        [msg] = receiver.json()
    assert msg["title"] == "TikTok account needs reconnecting: Dee (acct-9)"
    assert "rft.abcdefghijkl" not in json.dumps(msg)
    assert "tiktok_connect_account" in msg["next_step"]
