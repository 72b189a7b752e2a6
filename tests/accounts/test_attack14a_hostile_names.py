"""attack14a: a creator's display name in the daily consent check's log and in its alerts.

A display name is whatever a creator typed: line breaks, terminal escapes, bidi overrides, 100 kB.
The daily ``check_consent`` task names each account whose consent runs out soon in a WARNING line,
and sends on-call a message (webhook, Slack, e-mail). Both are read by a person at 3 a.m.: a line
break in the name forges a log line ("ERROR ... all accounts purged"), and a right-to-left override
(U+202E) turns the rest of the alert's line around, so the open_id and the day on-call reads are not
the ones the message holds. Real Postgres, real webhook and SMTP receivers.
"""

from __future__ import annotations

import email
import email.header
import json
import logging
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from receivers import http_receiver, smtp_receiver
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tiktok_warehouse.accounts_admin import daily_account_check
from tiktok_warehouse.tokens import TokenGrant, TokenStore

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
KEY = Fernet.generate_key().decode()
OPEN_ID = "oid-hostile-name"
#: A forged log line, a terminal escape (title + clear screen), a bidi override, then a lot more.
FORGED = "2026-03-02T09:30:00Z [error] TikTok account oid-other: all tokens purged, nothing to do"
HOSTILE_NAME = "Mia\n" + FORGED + "\r\x1b]0;owned\x07\x1b[2J\u202e)emit no( " + "\u05e9" * 20_000
#: Bidi embedding/override/isolate controls and the marks: they reorder what follows them on a line.
BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}


def _bad(text: str) -> list[str]:
    """The characters in ``text`` that have no place in a line a person reads: controls and bidi marks."""
    return sorted(
        {c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in BIDI_CONTROLS},
    )


@pytest.fixture
def engine(clean_warehouse: Engine) -> Engine:
    return clean_warehouse


def _add(engine: Engine, open_id: str, name: str, *, refresh_days: float | None) -> None:
    TokenStore(engine, KEY).save_grant(
        TokenGrant(
            open_id=open_id,
            access_token=f"act.{open_id}-access-token",
            expires_in=7200,
            refresh_token=f"rft.{open_id}-refresh-token",
            refresh_expires_in=None if refresh_days is None else int(refresh_days * 86400),
            scopes=frozenset({"user.info.basic"}),
            obtained_at=NOW - timedelta(days=1),
        ),
        display_name=name,
    )


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s - %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.mark.parametrize("estimated", [False, True], ids=["stated", "estimated"])
def test_the_daily_checks_warning_names_a_hostile_account_on_one_readable_line(engine: Engine, estimated: bool) -> None:
    """Failed on main: the name went into the WARNING verbatim (a forged line, ESC, U+202E, 40 kB)."""
    # A stated lifetime ending in 5 days (the 7-day warning); or an estimate: the row says it is one.
    _add(engine, OPEN_ID, HOSTILE_NAME, refresh_days=None if estimated else 6)
    if estimated:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE tiktok.accounts SET refresh_expires_at = :at WHERE open_id = :o"),
                {"at": NOW + timedelta(days=5), "o": OPEN_ID},
            )
    logger = logging.getLogger("attack14a.check_consent")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = _Lines()
    logger.addHandler(handler)
    try:
        summary = daily_account_check(engine, now=NOW, warning_days=(30, 7, 1), log=logger)
    finally:
        logger.removeHandler(handler)

    assert summary["warnings"] == {OPEN_ID: 7}
    [line] = [line for line in handler.lines if OPEN_ID in line]
    assert line.startswith("WARNING - TikTok account oid-hostile-name")
    assert "\n" not in line and "\r" not in line, "the display name forged a second log line"
    assert _bad(line) == [], f"control or bidi characters reach the log: {[hex(ord(c)) for c in _bad(line)]}"
    assert len(line) < 1_000, f"a {len(line)}-character log line"
    assert "runs out in 5 day(s)" in line and "(7-day warning" in line
    assert "Mia" in line, "the account is still named by its display name"


def test_the_consent_alert_shows_on_call_the_open_id_and_day_as_they_are(
    engine: Engine, test_databases: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failed on main: U+202E from the display name reached the alert's title, text and e-mail subject."""
    from tiktok_pipeline.common import _consent_alerts

    monkeypatch.setattr("tiktok_provider.notifications.tiktok._SENT", set())
    # Crossed the 7-day threshold within the last day: the daily check alerts once.
    _add(engine, OPEN_ID, HOSTILE_NAME, refresh_days=7.5)
    with http_receiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url}))
        assert _consent_alerts(engine, [], now=NOW, warning_days=(30, 7, 1)) == 1
        [message] = receiver.json()
    for part in ("title", "text", "next_step"):
        assert _bad(message[part].replace("\n", "")) == [], (part, [hex(ord(c)) for c in _bad(message[part])])
    assert _bad("".join(message["facts"].values())) == []
    assert f"({OPEN_ID})" in message["title"]

    monkeypatch.setattr("tiktok_provider.notifications.tiktok._SENT", set())
    with smtp_receiver() as smtp:
        monkeypatch.setenv(
            "AIRFLOW_CONN_TIKTOK_ALERTS",
            json.dumps(
                {
                    "conn_type": "smtp",
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "extra": {
                        "from_email": "airflow@example.org",
                        "to": "oncall@example.org",
                        "disable_tls": True,
                        "disable_ssl": True,
                    },
                }
            ),
        )
        assert _consent_alerts(engine, [], now=NOW, warning_days=(30, 7, 1)) == 1
        [(_, _, raw)] = smtp.messages
    mail = email.message_from_bytes(raw)
    subject = str(email.header.make_header(email.header.decode_header(mail["Subject"])))
    assert _bad(subject) == [], [hex(ord(c)) for c in _bad(subject)]
