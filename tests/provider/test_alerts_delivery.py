"""Alerts delivered for real: a failing task under dag.test() -> a local webhook, and an SMTP server."""

from __future__ import annotations

import email
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from adhoc_dags import register
from dag_support import tries
from receivers import http_receiver, smtp_receiver

OPEN_ID = "-000OyJzSy1p0eNqIuaZgJPQpNmvBSvLxK9L7aQ"
PLANTED_TOKEN = "act.1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f607182"
CLIENT_SECRET = "client-secret-for-alert-test-9876"


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch, encryption_key: str) -> str:
    """A TikTok connection whose client secret and Fernet key must never reach a message."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_TIKTOK_DEFAULT",
        json.dumps(
            {
                "conn_type": "tiktok",
                "host": "http://127.0.0.1:9",
                "login": "ck",
                "password": CLIENT_SECRET,
                "extra": {"token_encryption_key": encryption_key},
            }
        ),
    )
    return encryption_key


def _failing_dag(dag_id: str, exc_text: str, *, retries: int) -> Any:
    from airflow.sdk import DAG, BaseOperator

    from tiktok_provider.notifications.tiktok import TikTokAlertNotifier

    class FailingOp(BaseOperator):
        def __init__(self, *, open_id: str, account_name: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.open_id, self.account_name = open_id, account_name

        def execute(self, context: Any) -> None:
            self.log.error("request log line with %s", exc_text)
            raise RuntimeError(exc_text)

    with DAG(dag_id, start_date=datetime(2026, 1, 1), schedule=None) as dag:
        FailingOp(
            task_id="snapshot_profile",
            open_id=OPEN_ID,
            account_name="Ana's Kitchen",
            retries=retries,
            retry_delay=timedelta(seconds=0),
            on_failure_callback=TikTokAlertNotifier(),
            doc_md="**On failure:** reconnect the account, then clear this task.",
        )
    return register(dag)


def test_a_failed_account_task_sends_one_webhook_message_after_its_retries_without_secrets(
    test_databases: Any, secrets_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiktok_provider.errors import TikTokServerError

    err = TikTokServerError(
        f"upstream said {PLANTED_TOKEN} and key {secrets_env} and {CLIENT_SECRET}",
        endpoint="/v2/user/info/",
        open_id=OPEN_ID,
        http_status=503,
        code="internal_error",
        log_id="20261205221500ABC",
    )
    with http_receiver() as receiver:
        monkeypatch.setenv(
            "AIRFLOW_CONN_TIKTOK_ALERTS", json.dumps({"conn_type": "http", "host": f"{receiver.url}/hooks/oncall"})
        )
        run = _failing_dag("alerts_webhook_test", str(err), retries=2).test()
        messages = receiver.json()
        raw = b"".join(body for _, _, body in receiver.requests).decode()

    assert str(run.state) == "failed"
    assert tries(run) == {("snapshot_profile", -1): 3}
    assert len(messages) == 1, messages  # three tries, one message: on_failure_callback fires after the last
    [msg] = messages
    assert receiver.requests[0][0] == "/hooks/oncall"
    assert msg["kind"] == "task_failed"
    assert "Ana's Kitchen" in msg["text"] and OPEN_ID in msg["text"]
    assert msg["facts"]["Endpoint"] == "/v2/user/info/"
    assert msg["facts"]["TikTok log_id"] == "20261205221500ABC"
    assert "reconnect the account" in msg["facts"]["Runbook"]
    assert "/dags/alerts_webhook_test/runs/" in msg["url"] and msg["url"].endswith("/tasks/snapshot_profile")
    for secret in (PLANTED_TOKEN, secrets_env, CLIENT_SECRET):
        assert secret not in raw


def test_slack_format_and_smtp_delivery(test_databases: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tiktok_provider.notifications.tiktok import Alert, deliver, slack_text

    title = "TikTok account needs reconnecting: <b>Ana</b>"
    alert = Alert(kind="reconnect_needed", title=title, facts={"open_id": "x"})
    with http_receiver() as receiver:
        monkeypatch.setenv(
            "AIRFLOW_CONN_SLACKISH",
            json.dumps({"conn_type": "http", "host": receiver.url, "extra": {"format": "slack"}}),
        )
        assert deliver(alert, "slackish")
        assert receiver.json() == [{"text": slack_text(alert)}]
        assert "&lt;b&gt;Ana&lt;/b&gt;" in receiver.json()[0]["text"]  # Slack markup is escaped

    with smtp_receiver() as smtp:
        monkeypatch.setenv(
            "AIRFLOW_CONN_MAILISH",
            json.dumps(
                {
                    "conn_type": "smtp",
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "extra": {
                        "from_email": "airflow@example.org",
                        "to": "oncall@example.org, data@example.org",
                        "disable_tls": True,
                        "disable_ssl": True,
                    },
                }
            ),
        )
        # a display name with a line break must not add a header (Bcc) to the e-mail
        forged = alert.title + "\r\nBcc: evil@example.org"
        assert deliver(Alert(kind="reconnect_needed", title=forged, facts={"open_id": "y"}), "mailish")
        [(sender, rcpts, raw)] = smtp.messages
    assert sender == "airflow@example.org" and sorted(rcpts) == ["data@example.org", "oncall@example.org"]
    body = email.message_from_bytes(raw)
    assert body["Bcc"] is None and "evil@example.org" not in rcpts
    html_part = next(p for p in body.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    assert "&lt;b&gt;Ana&lt;/b&gt;" in html_part and "<b>Ana</b>" not in html_part


def test_no_alerts_connection_means_no_message_and_no_error(
    test_databases: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiktok_provider.notifications.tiktok import Alert, deliver

    monkeypatch.delenv("AIRFLOW_CONN_TIKTOK_ALERTS", raising=False)
    assert deliver(Alert(kind="x", title="t", dedupe_key="k-none"), "tiktok_alerts_missing") is False


def test_the_deadline_callback_sends_one_message_with_the_run(
    test_databases: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the triggerer runs when a daily run misses its deadline, with the context Airflow gives it."""
    import asyncio

    from airflow.sdk._shared.module_loading import import_string

    from tiktok_pipeline.deadlines import daily_run_deadline

    deadline = daily_run_deadline(hours=6)
    callback = import_string(deadline.callback.path)
    context = {  # the shape of Deadline.handle_miss()'s context: DAGRunResponse as JSON
        "dag_run": {
            "dag_id": "tiktok_video_backfill",
            "dag_run_id": "scheduled__2026-12-05T00:00:00+00:00",
            "state": "running",
            "queued_at": "2026-12-05T00:00:05+00:00",
        },
        "deadline": {"id": "0193", "deadline_time": "2026-12-05T06:00:05+00:00"},
    }
    with http_receiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_TIKTOK_ALERTS", json.dumps({"conn_type": "http", "host": receiver.url}))
        asyncio.run(callback(context=context, **deadline.callback.kwargs))
        [msg] = receiver.json()
    assert msg["kind"] == "deadline_missed"
    assert msg["title"] == "TikTok DAG run not finished 6 hours after it was queued: tiktok_video_backfill"
    assert msg["facts"]["Queued at"] == "2026-12-05T00:00:05+00:00"
    assert msg["url"].endswith("/dags/tiktok_video_backfill/runs/scheduled__2026-12-05T00%3A00%3A00%2B00%3A00")


def test_a_failing_webhook_never_puts_its_secret_url_in_the_error(
    test_databases: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Slack-style webhook URL is itself the credential (.../services/T0/B0/<secret>): a 404 or a
    refused connection must not carry it into the task log through the exception's text."""
    import socket

    from tiktok_provider.notifications.tiktok import Alert, deliver

    secret_path = "/services/T000/B000/s3cr3tWebhookPathXyZ"
    alert = Alert(kind="reconnect_needed", title="t", facts={"open_id": "x"})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with http_receiver(status=404) as receiver:
        for url in (receiver.url + secret_path, f"http://127.0.0.1:{closed_port}{secret_path}"):
            monkeypatch.setenv("AIRFLOW_CONN_HOOKISH", json.dumps({"conn_type": "http", "host": url}))
            with pytest.raises(Exception) as excinfo:
                deliver(alert, "hookish")
            chain, exc = [], excinfo.value
            while exc is not None:
                chain.append(f"{type(exc).__name__}: {exc}")
                exc = exc.__cause__ or exc.__context__
            assert "s3cr3t" not in "\n".join(chain), chain
