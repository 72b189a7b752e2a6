"""The alert messages: what they say, and that no secret survives into them (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from tiktok_provider.errors import TikTokMalformedResponse, TikTokReauthRequired
from tiktok_provider.notifications.tiktok import (
    REDACTED,
    consent_alert,
    deadline_alert,
    failure_alert,
    reconnect_alert,
    redact,
    slack_text,
)

OPEN_ID = "-000OyJzSy1p0eNqIuaZgJPQpNmvBSvLxK9L7aQ"  # the shape of a real open_id: long, base64-like
ACCESS = "act.9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928"
REFRESH = "rft.0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071"
FERNET_KEY = "kW3v7j0bXk0l6m2Qy8cT1pZx4nR9sD5fG7hJ2kL0aB8="
CLIENT_SECRET = "sk-client-secret-value-1234"


def test_redact_removes_token_shaped_strings_and_known_secrets_but_keeps_the_open_id() -> None:
    text = (
        f"refresh failed for {OPEN_ID}: Authorization: Bearer {ACCESS} refresh_token={REFRESH}&x=1 "
        f"key {FERNET_KEY} secret {CLIENT_SECRET} blob gAAAAABlZ3xk9_0123456789abcdefghijklmnop"
    )
    out = redact(text, secrets=[CLIENT_SECRET], keep=[OPEN_ID])
    for secret in (ACCESS, REFRESH, FERNET_KEY, CLIENT_SECRET, "gAAAAABlZ3xk9"):
        assert secret not in out
    assert OPEN_ID in out
    assert out.count(REDACTED) >= 5


def test_redact_hides_an_unknown_long_random_string_but_not_words() -> None:
    out = redact("value Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3A in a sentence_with_words")
    assert "Zm9vYmFy" not in out and "sentence_with_words" in out


def _context(exc: BaseException, *, name: str = "Ana's Kitchen", doc_md: str | None = None) -> dict:
    task = SimpleNamespace(open_id=OPEN_ID, account_name=name, doc_md=doc_md, task_id="snapshot_profile")
    ti = SimpleNamespace(
        dag_id="tiktok_profile_snapshot",
        run_id="scheduled__2026-12-05T00:00:00+00:00",
        task_id="snapshot_profile",
        map_index=3,
        try_number=4,
    )
    return {"ti": ti, "task": task, "exception": exc}


def test_failure_alert_names_account_endpoint_log_id_next_step_and_link() -> None:
    err = TikTokMalformedResponse(
        f"cursor did not advance (token {ACCESS})", endpoint="/v2/video/list/", open_id=OPEN_ID, log_id="20261205X1"
    )
    doc = "### t\n**On failure:**\n- *malformed*: report it with the log_id."
    alert = failure_alert(_context(err, doc_md=doc))
    text = alert.text()
    assert "Ana's Kitchen" in text and OPEN_ID in text
    assert alert.facts["Endpoint"] == "/v2/video/list/"
    assert alert.facts["TikTok log_id"] == "20261205X1"
    assert "Report it to TikTok support" in alert.next_step
    assert "report it with the log_id" in alert.facts["Runbook"]
    assert alert.url.endswith(
        "/dags/tiktok_profile_snapshot/runs/scheduled__2026-12-05T00%3A00%3A00%2B00%3A00/tasks/snapshot_profile/mapped/3"
    )
    assert ACCESS not in text and ACCESS not in str(alert.as_json())
    assert alert.dedupe_key.endswith("|snapshot_profile|3|4")
    # A run deleted and made again under its run_id restarts its tries: the task instance's id tells them apart.
    ti_id = "0193a7c4-0000-7000-8000-000000000001"
    context = _context(err, doc_md=doc)
    context["ti"].id = ti_id
    assert f"|{ti_id}|snapshot_profile|3|4" in failure_alert(context).dedupe_key


def test_failure_alert_reads_the_airflow_fail_exception_the_operators_raise() -> None:
    """The operators raise AirflowFailException(str(TikTokError)) from None: the text is all there is."""
    from airflow.sdk.exceptions import AirflowFailException

    err = TikTokReauthRequired("refresh token revoked", endpoint="/v2/oauth/token/", open_id=OPEN_ID, log_id="L42")
    alert = failure_alert(_context(AirflowFailException(str(err))))
    assert alert.facts["Endpoint"] == "/v2/oauth/token/"
    assert alert.facts["TikTok log_id"] == "L42"
    assert "authorize the app again" in alert.next_step


def test_a_batch_tasks_alert_names_the_batch_not_a_missing_open_id() -> None:
    """A batch task ends with no account of its own (open_id None) and its label as the name."""
    from airflow.sdk.exceptions import AirflowFailException

    ctx = _context(AirflowFailException("1 of 2 accounts failed (...): Ana (x): ..."), name="accounts 1-2 of 2")
    ctx["task"].open_id = None
    alert = failure_alert(ctx)
    assert alert.facts["Account"] == "accounts 1-2 of 2"
    assert alert.title == "TikTok task failed for accounts 1-2 of 2: tiktok_profile_snapshot.snapshot_profile"
    assert "None" not in alert.text()


def test_every_log_id_in_a_batch_failure_reaches_on_call() -> None:
    """TikTok support asks for the log_id: a batch's message holds one per failed account, none is hidden."""
    from airflow.sdk.exceptions import AirflowFailException

    ids = ["202612060556252975D49F3F073BFFF78C", "2026120605562536E6A0B1C2D3E4F5A6B7"]  # TikTok's shape, 34 chars
    text = "2 of 2 accounts failed (...): " + "; ".join(
        f"Ana ({OPEN_ID}): AirflowFailException: TikTok /v2/user/info/ call for account {OPEN_ID} failed: "
        f"ok (HTTP 200): 'data' is missing [log_id={log_id}]. Report it to TikTok support with the log_id."
        for log_id in ids
    )
    ctx = _context(AirflowFailException(text + f" {ACCESS}"), name="accounts 1-2 of 2")
    alert = failure_alert(ctx)
    assert all(f"[log_id={log_id}]" in alert.facts["Message"] for log_id in ids), alert.facts["Message"]
    assert ACCESS not in alert.text()


def test_a_refused_connect_runs_alert_says_the_next_step_as_a_sentence() -> None:
    """The connect run's refusal puts TikTok's answer, log_id included, in parentheses mid-sentence."""
    from airflow.sdk.exceptions import AirflowFailException

    from tiktok_pipeline.connect import _refused

    refused = TikTokReauthRequired("Authorization code is expired.", code="invalid_grant", log_id="L7")
    message = _refused(refused, redirect_uri="https://a.test/cb", variable="")
    alert = failure_alert(_context(AirflowFailException(message)))
    assert alert.facts["TikTok log_id"] == "L7"
    assert alert.next_step.startswith("it has expired (codes live minutes)"), alert.next_step


def test_creator_text_in_the_name_is_kept_as_data_and_scrubbed_of_token_shapes() -> None:
    name = "{{ conn.tiktok_default.password }} " + ACCESS
    alert = failure_alert(_context(RuntimeError("boom"), name=name))
    assert "{{ conn.tiktok_default.password }}" in alert.facts["Account name"]
    assert ACCESS not in alert.text()


def test_consent_and_deadline_messages() -> None:
    warning = SimpleNamespace(
        open_id=OPEN_ID, name="Ana", refresh_expires_at=datetime(2026, 12, 12, tzinfo=UTC), days_left=7, threshold=7
    )
    alert = consent_alert(warning)
    assert "expires in 7 days (2026-12-12)" in alert.title and OPEN_ID in alert.title
    guess = consent_alert(SimpleNamespace(**{**vars(warning), "estimated": True}))
    assert "may expire in 7 days" in guess.title
    assert "estimated" in guess.facts["Expires"] and "if TikTok refuses" in guess.next_step
    late = deadline_alert(
        {"dag_run": {"dag_id": "tiktok_video_backfill", "dag_run_id": "r1", "state": "running"}, "deadline": {}},
        hours=6,
    )
    assert "not finished 6 hours after it was queued" in late.title
    assert late.url.endswith("/dags/tiktok_video_backfill/runs/r1")


def test_provider_info_lists_the_notifier_and_matches_airflows_schema() -> None:
    import json
    from pathlib import Path

    import airflow
    import jsonschema
    from airflow.sdk import BaseNotifier
    from airflow.sdk._shared.module_loading import import_string

    from tiktok_provider.get_provider_info import get_provider_info

    info = get_provider_info()
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)
    assert info["notifications"] == ["tiktok_provider.notifications.tiktok.TikTokAlertNotifier"]
    assert all(issubclass(import_string(path), BaseNotifier) for path in info["notifications"])


def test_a_display_name_cannot_forge_lines_or_fields_of_the_message() -> None:
    # A creator's display name is whatever they typed: newlines would forge "Next step:" lines (and,
    # in the e-mail subject, headers).
    name = "Ana\nNext step: run `DROP SCHEMA tiktok` now\r\nBcc: evil@example.com\u2028x"
    for alert in (
        failure_alert(_context(RuntimeError("boom"), name=name)),
        consent_alert(
            SimpleNamespace(
                open_id=OPEN_ID,
                name=name,
                refresh_expires_at=datetime(2026, 12, 12, tzinfo=UTC),
                days_left=7,
                threshold=7,
            )
        ),
        reconnect_alert(OPEN_ID, name, reason="gone\nNext step: forged"),
    ):
        lines = alert.text().splitlines()
        assert [line for line in lines if line.startswith("Next step:")] == [f"Next step: {alert.next_step}"]
        assert not any(line.startswith("Bcc:") for line in lines)
        assert "\n" not in alert.title and "\r" not in alert.title and "\u2028" not in alert.title
        for value in alert.facts.values():
            assert "\n" not in value and "\r" not in value


def test_slack_text_escapes_creator_markup() -> None:
    # Slack reads <!channel>, <@U123> and <http://evil|click> in "text" as mentions and links.
    name = "<!channel> <http://evil.example|Reconnect here> & <@U123>"
    alert = failure_alert(_context(RuntimeError("boom <!here>"), name=name))
    text = slack_text(alert)
    assert "<!channel>" not in text and "<!here>" not in text and "<http://evil" not in text and "<@U123>" not in text
    assert "&lt;!channel&gt;" in text and "&amp;" in text
    # the link on-call should click is still a link
    assert alert.url in text
