"""attack14e: failures found in the leftover alerts and the cover download's deadline slack.

Each test fails on the code it was written against (c05b1e5) and says what should happen instead.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import text

from tiktok_pipeline.alert_digest import send_leftovers
from tiktok_pipeline.archive import ArchiveSettings, CoverArchiver

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64 + b"\xff\xd9"


def _fold(engine: Any, dag_id: str, run_id: str, account: str, *, ago: timedelta) -> None:
    key = f"{dag_id}|{run_id}|0190e0a0-0000-7000-8000-{account[-12:]:0>12}|snapshot_profile|-1|1"
    alert = {
        "kind": "task_failed",
        "title": f"TikTok task failed for {account}",
        "dedupe_key": key,
        "facts": {"Account": f"Ana ({account})", "Error": "TikTokServerError internal_error HTTP 500"},
    }
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO tiktok.alert_outbox (dedupe_key, dag_id, run_id, kind, alert, folded, created_at)"
                 " VALUES (:k, :d, :r, 'task_failed', CAST(:a AS jsonb), true, :t)"),
            {"k": key, "d": dag_id, "r": run_id, "a": json.dumps(alert), "t": NOW - ago},
        )  # fmt: skip


class _SlowWebhook:
    """A webhook that holds its first POST until a second one comes (or 10 s pass): two senders at once."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.first = threading.Event()
        self.second = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                outer.bodies.append(body)
                if len(outer.bodies) == 1:
                    outer.first.set()
                    outer.second.wait(10)
                else:
                    outer.second.set()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_two_leftover_senders_at_once_send_a_run_s_leftover_digest_once(clean_warehouse: Any, monkeypatch) -> None:
    """FINDING: the digest of a run marked failed is sent twice when two senders look at once.

    Every run's ``alert_digest`` and the daily ``check_consent`` call send_leftovers; on Celery they
    run at the same time on different workers. send_digest holds the run's lock only while it reads
    the unsent rows: both senders read them as unsent, both deliver, and only then is ``sent_at``
    written. The docstring promises "once each (the run's lock and sent_at keep two senders from both
    sending)". A webhook that does not deduplicate (Slack) shows on-call the same digest twice.
    """
    for account in ("open-000000000001", "open-000000000002"):
        _fold(clean_warehouse, "tiktok_video_backfill", "manual__marked_failed", account, ago=timedelta(hours=2))
    webhook = _SlowWebhook()
    monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_ALERTS", json.dumps({"conn_type": "http", "host": webhook.url}))
    results: list[Any] = []

    def sender() -> None:
        results.append(send_leftovers(clean_warehouse, run_is_over=lambda d, r: True, now=NOW))

    try:
        a = threading.Thread(target=sender)
        a.start()
        assert webhook.first.wait(20), "the first sender never posted"
        b = threading.Thread(target=sender)  # the other worker's task, while the first message is in flight
        b.start()
        b.join(30)
        webhook.second.set()
        a.join(30)
    finally:
        webhook.close()
    titles = [body["title"] for body in webhook.bodies]
    assert len(titles) == 1, f"the leftover digest went out {len(titles)} times: {titles}"


# -- the cover download's deadline slack ----------------------------------------------------------------


class _ShiftedClock:
    """time.monotonic(), moved forward on demand: the archiver's own ``clock`` seam."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.shift


def test_a_cover_fully_received_in_the_deadline_s_last_tenth_of_a_second_is_not_thrown_away(
    clean_warehouse: Any, tmp_path: Any
) -> None:
    """FINDING: a complete download is reported "slower than N s" when its body arrives < 0.1 s early.

    c05b1e5 made ``_out_of_time`` true within DEADLINE_SLACK_SECONDS of the deadline, meant for an
    *error* there. But ``_read`` also asks it after every chunk it received, the last one included:
    a cover whose whole body has arrived 0.08 s before the deadline is dropped and told as too slow
    (a Retryable that the deadline forbids retrying), although nothing went wrong.
    """
    deadline_seconds = 5.0
    clock = _ShiftedClock()
    started: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            # The answer comes as the deadline is 0.08 s away (by the archiver's clock): well inside it.
            clock.shift = started[0] + deadline_seconds - 0.08 - time.monotonic()
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(JPEG)))
            self.end_headers()
            self.wfile.write(JPEG)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    settings = ArchiveSettings(
        base=f"file://{tmp_path}/covers",
        pace_seconds=0,
        workers=1,
        retries=0,
        deadline_seconds=deadline_seconds,
        private_hosts=frozenset({f"127.0.0.1:{port}", "127.0.0.1"}),
    )
    archiver = CoverArchiver(clean_warehouse, settings, clock=clock)
    try:
        started.append(clock())
        got = archiver.download(f"http://127.0.0.1:{port}/cover.jpeg")
    finally:
        server.shutdown()
        server.server_close()
    assert got.body == JPEG
