"""On-call alerts: one actionable message per failed account task, and account upkeep messages.

A message names the account (display name and open_id), the endpoint, TikTok's ``log_id``, the
next step and a link to the task instance in the UI. Every free text (an exception's message, a
runbook excerpt, a creator's display name) goes through :func:`redact` first: no token, key or
client secret ever reaches a chat room or a mailbox.

Where messages go is the ``tiktok_alerts`` Airflow connection (another id can be given):

- ``http``/``https`` (generic webhook): the message is POSTed as JSON to the connection's URL
  (``host`` may hold the whole URL, else ``schema://host:port`` + the ``endpoint`` extra). With the
  extra ``{"format": "slack"}`` the body is ``{"text": ...}``, which a Slack (or Mattermost,
  Rocket.Chat) incoming webhook accepts; no Slack provider needed.
- ``smtp`` (Airflow's SMTP provider, ``SmtpHook``): an e-mail to the comma-separated addresses of
  the ``to`` extra, from the ``from_email`` extra.

No connection, no message: a WARNING in the task log says so, and the task's own state is unchanged.
Failure callbacks run once, after the task's retries are exhausted (Airflow does not call
``on_failure_callback`` for a try that goes up for retry); each message also carries a
``dedupe_key`` (DAG, run, task, map index, try) for receivers that deduplicate, and one process
never sends the same key twice.
"""

from __future__ import annotations

import html
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)

#: The connection that says where alerts go.
ALERTS_CONN_ID = "tiktok_alerts"
#: The TikTok connection whose client secret and token encryption key are scrubbed from messages.
TIKTOK_CONN_ID = "tiktok_default"
#: The longest free text (error message, runbook excerpt) a message carries.
MAX_TEXT = 1200
WEBHOOK_TIMEOUT_SECONDS = 10

REDACTED = "***"

#: Token-shaped strings: TikTok access/refresh/client tokens, bearer headers, Fernet tokens and keys,
#: and any other long run of key material (40+ characters of base64/url-safe alphabet with a digit).
_TOKEN_PATTERNS = (
    re.compile(r"\b(?:act|rft|clt)\.[A-Za-z0-9._!*~+/=-]{8,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=!*-]+"),
    re.compile(r"(?i)\b(access_token|refresh_token|client_secret|code|token_encryption_key)=[^&\s]+"),
    re.compile(r"gAAAAA[A-Za-z0-9_=-]{20,}"),
    re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}=(?![A-Za-z0-9_=-])"),
)
_LONG_RUN = re.compile(r"(?<![A-Za-z0-9+/_=.!*-])[A-Za-z0-9+/_=.!*-]{40,}(?![A-Za-z0-9+/_=.!*-])")

#: What to do next, by error class, for failures whose exception carries no advice of its own.
ADVICE = {
    "TikTokReauthRequired": "Ask the account's owner to authorize the app again (TikTok accounts page or "
    "the tiktok_connect_account DAG); later runs skip the account until then.",
    "TikTokAccessTokenInvalid": "The token was refreshed once and still rejected: reconnect the account.",
    "TikTokScopeError": "Reconnect the account with the missing scope (tiktok_connect_account).",
    "TikTokInvalidParams": "A bug in the request, not a transient fault: fix the parameters; retrying will not help.",
    "TikTokRateLimited": "Lower rate_limit_per_minute in the TikTok connection's extra or the tiktok_api pool's "
    "slots, then clear the task.",
    "TikTokServerError": "Transient on TikTok's side: clear the task later.",
    "TikTokNetworkError": "Check connectivity to the API host, then clear the task.",
    "TikTokMalformedResponse": "The answer broke the API contract: report it to TikTok support with the log_id.",
    "TikTokOAuthError": "Check the client key and secret of the TikTok connection, and the redirect_uri.",
    "TikTokConfigError": "Fix the TikTok connection (host, login, password, extra), then clear the task.",
    "TokenEncryptionKeyInvalid": "Put back the token_encryption_key the tokens were stored with, then clear the task.",
}
DEFAULT_ADVICE = "Read the task's log and runbook (the task's doc), fix the cause, then clear the task."

_MESSAGE_ENDPOINT = re.compile(r"TikTok (/v2/[A-Za-z0-9_/]+|API) call for account")
_MESSAGE_LOG_ID = re.compile(r"\[log_id=([A-Za-z0-9_.:-]{1,128})\]")
_MESSAGE_CODE = re.compile(r"failed: ([A-Za-z0-9_]{1,80}) \((?:HTTP (\d{3})|no HTTP status)\)")


def redact(text: Any, *, secrets: Iterable[str] = (), keep: Iterable[str] = ()) -> str:
    """Return ``text`` without secrets: the given ones, Airflow's masked ones, and token-shaped strings.

    :param secrets: values known to be secret (a client secret, the encryption keys).
    :param keep: long values known to be safe that the token-shape rule would hide (an open_id).
    """
    out = "" if text is None else str(text)
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        out = out.replace(secret, REDACTED)
    try:  # whatever Airflow's secrets masker knows (connection passwords, sensitive extras)
        from airflow.sdk._shared.secrets_masker import redact as airflow_redact

        out = str(airflow_redact(out))
    except Exception:  # pragma: no cover - masker unavailable outside a task
        pass
    for pattern in _TOKEN_PATTERNS:
        out = pattern.sub(lambda m: f"{m.group(1)}={REDACTED}" if m.lastindex else REDACTED, out)
    kept = {k for k in keep if k}
    return _LONG_RUN.sub(lambda m: m.group(0) if m.group(0) in kept or not _has_digit(m.group(0)) else REDACTED, out)


#: Bidi embeddings, overrides, isolates and marks: each reorders what follows it on the line.
_BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C))


def one_line(value: str) -> str:
    """``value`` on one line: line breaks and other control characters become spaces, bidi controls go.

    Creator text (a display name) and exception messages go into labelled lines and the e-mail
    subject: a line break there would forge a "Next step:" line or a header, and a right-to-left
    override (U+202E) would show the rest of the line (the open_id, the day) reversed, so on-call
    would read another account or date than the message holds. Right-to-left names still read
    right to left (that needs no control character); joiners in emoji and scripts are kept.
    """
    return "".join(
        " " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in value if c not in _BIDI_CONTROLS
    )


def _has_digit(value: str) -> bool:
    return any(c.isdigit() for c in value)


def known_secrets(tiktok_conn_id: str = TIKTOK_CONN_ID) -> list[str]:
    """Return the TikTok connection's client secret and token encryption key(s), to scrub from messages."""
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(tiktok_conn_id)
    except Exception:  # no such connection: nothing to scrub by value (the patterns still apply)
        return []
    extra = conn.extra_dejson or {}
    keys = str(extra.get("token_encryption_key") or "")
    return [s for s in [conn.password or "", *(k.strip() for k in keys.split(","))] if s]


@dataclass
class Alert:
    """One message for on-call: a title, labelled facts, a next step and a link."""

    kind: str
    title: str
    facts: dict[str, str] = field(default_factory=dict)
    next_step: str = ""
    url: str | None = None
    dedupe_key: str = ""

    def __post_init__(self) -> None:
        self.title = one_line(self.title)
        self.facts = {one_line(label): one_line(str(value)) for label, value in self.facts.items()}
        self.next_step = one_line(self.next_step)

    def text(self) -> str:
        lines = [self.title, ""]
        lines += [f"{label}: {value}" for label, value in self.facts.items() if value]
        if self.next_step:
            lines += ["", f"Next step: {self.next_step}"]
        if self.url:
            lines += ["", f"Task in Airflow: {self.url}"]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "title": self.title,
            "facts": dict(self.facts),
            "next_step": self.next_step,
            "url": self.url,
            "dedupe_key": self.dedupe_key,
            "text": self.text(),
        }


def _ui_base_url() -> str:
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")


def task_instance_url(dag_id: str, run_id: str, task_id: str, map_index: int | None = None) -> str:
    """The task instance's page in Airflow 3's UI (``[api] base_url``)."""
    mapped = f"/mapped/{map_index}" if map_index is not None and map_index >= 0 else ""
    return f"{_ui_base_url()}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}/tasks/{quote(task_id)}{mapped}"


def dag_run_url(dag_id: str, run_id: str) -> str:
    return f"{_ui_base_url()}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"


def _error_details(exc: BaseException | None) -> dict[str, Any]:
    """What the exception says: endpoint, log_id, code, status, error class, advice, message."""
    from tiktok_provider.errors import TikTokError

    chain: list[BaseException] = []
    while exc is not None and len(chain) < 5:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for err in chain:
        if isinstance(err, TikTokError):
            return {
                "error": type(err).__name__,
                "endpoint": err.endpoint,
                "log_id": err.log_id,
                "code": err.code,
                "http_status": err.http_status,
                "open_id": err.open_id,
                "advice": err.next_step(),
                "message": str(err),
            }
    first = chain[0] if chain else None
    message = str(first) if first is not None else ""
    details: dict[str, Any] = {"error": type(first).__name__ if first is not None else None, "message": message}
    if m := _MESSAGE_ENDPOINT.search(message):
        details["endpoint"] = None if m.group(1) == "API" else m.group(1)
    if m := _MESSAGE_LOG_ID.search(message):
        details["log_id"] = None if m.group(1) == "none" else m.group(1)
        # after "[log_id=...]. ", or "[log_id=...]): " where a message put TikTok's answer in parentheses
        details["advice"] = message[m.end() :].lstrip(".): ").strip() or None
    if m := _MESSAGE_CODE.search(message):
        details["code"], details["http_status"] = m.group(1), m.group(2)
    for name in ADVICE:
        if name in message and not details.get("advice"):
            details["advice"] = ADVICE[name]
    return details


def runbook_excerpt(doc_md: str | None) -> str:
    """The "On failure" part of a task's doc (its runbook), as plain text."""
    if not doc_md:
        return ""
    _, found, rest = doc_md.partition("**On failure:**")
    text = rest if found else ""
    return " ".join(text.split())[:MAX_TEXT]


def failure_alert(context: Mapping[str, Any], *, secrets: Iterable[str] = ()) -> Alert:
    """Build the message for a failed task from its callback context."""
    ti = context.get("ti") or context.get("task_instance")
    task = context.get("task") or getattr(ti, "task", None)
    dag_id = str(getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", ""))
    run_id = str(getattr(ti, "run_id", None) or getattr(context.get("dag_run"), "run_id", ""))
    task_id = str(getattr(ti, "task_id", None) or getattr(task, "task_id", ""))
    map_index = getattr(ti, "map_index", -1)
    try_number = getattr(ti, "try_number", None)
    details = _error_details(context.get("exception"))
    open_id = getattr(task, "open_id", None) or details.get("open_id")
    name = getattr(task, "account_name", None)
    # the error's own endpoint, else the one the operator reads (its ``endpoint`` attribute)
    endpoint = details.get("endpoint") or getattr(task, "endpoint", None) or ""
    # Every log_id the message names (a batch's names one per failed account): "log_id=<34 characters>"
    # is a long run of key-like characters, which redact() would hide.
    log_ids = [i for i in _MESSAGE_LOG_ID.findall(str(details.get("message") or "")) if i != "none"]
    keep = [v for v in (open_id, details.get("log_id"), *log_ids, *(f"log_id={i}" for i in log_ids)) if v]
    clean = lambda value: redact(value, secrets=secrets, keep=keep)[:MAX_TEXT]  # noqa: E731
    if name and open_id and name != open_id:
        account = f"{clean(name)} ({open_id})"
    else:  # one of them, or neither: a batch task has its label ("accounts 1-50 of 2000") and no open_id
        account = open_id or (clean(name) if name else "")
    who = f" for {account}" if account else ""
    advice = details.get("advice") or ADVICE.get(str(details.get("error")), DEFAULT_ADVICE)
    alert = Alert(
        kind="task_failed",
        title=f"TikTok task failed{who}: {dag_id}.{task_id}",
        facts={
            "DAG": dag_id,
            "Run": run_id,
            "Task": task_id + (f" [{map_index}]" if map_index is not None and map_index >= 0 else ""),
            "Account": account,
            "Account name": clean(name) if name else "",
            "open_id": open_id or "",
            "Endpoint": endpoint or "",
            "TikTok log_id": details.get("log_id") or "",
            "Error": " ".join(
                str(v) for v in (details.get("error"), details.get("code"), details.get("http_status") and "HTTP") if v
            )
            + (f" {details['http_status']}" if details.get("http_status") else ""),
            "Message": clean(details.get("message")),
            "Runbook": clean(runbook_excerpt(getattr(task, "doc_md", None))),
        },
        next_step=clean(advice),
        url=task_instance_url(dag_id, run_id, task_id, map_index),
        # The task instance's id too: a run deleted and made again under its run_id restarts its tries at 1.
        dedupe_key="|".join(
            str(part)
            for part in (dag_id, run_id, getattr(ti, "id", None), task_id, map_index, try_number)
            if part is not None
        ),
    )
    return alert


def reconnect_alert(open_id: str, name: str | None, *, reason: str = "", secrets: Iterable[str] = ()) -> Alert:
    """The message for an account that needs reconnecting (its refresh token was rejected or ran out)."""
    clean_name = redact(name, secrets=secrets, keep=[open_id])[:200] if name else ""
    account = f"{clean_name} ({open_id})" if clean_name and clean_name != open_id else open_id
    return Alert(
        kind="reconnect_needed",
        title=f"TikTok account needs reconnecting: {account}",
        facts={"Account": account, "open_id": open_id, "Reason": redact(reason, secrets=secrets, keep=[open_id])},
        next_step=ADVICE["TikTokReauthRequired"],
        url=f"{_ui_base_url()}/dags/tiktok_connect_account",
        dedupe_key=f"reconnect|{open_id}",
    )


def consent_alert(warning: Any) -> Alert:
    """The message for a creator's consent that runs out soon (a ``ConsentWarning``)."""
    open_id = warning.open_id
    name = redact(warning.name, keep=[open_id])[:200]
    account = f"{name} ({open_id})" if name and name != open_id else open_id
    day = warning.refresh_expires_at.date().isoformat()
    facts = {"Account": account, "open_id": open_id, "Expires": warning.refresh_expires_at.isoformat()}
    after = "after it, the account's tasks stop."
    if getattr(warning, "estimated", False):
        facts["Expires"] += " (estimated: TikTok did not state the lifetime)"
        after = "after it, the account's tasks stop if TikTok refuses its refresh token."
    return Alert(
        kind="consent_expiring",
        title=f"TikTok consent of {account} {'may expire' if getattr(warning, 'estimated', False) else 'expires'} "
        f"in {warning.days_left} day{'' if warning.days_left == 1 else 's'} ({day})",
        facts=facts,
        next_step="Ask the creator to authorize the app again before then (TikTok accounts page or the "
        f"tiktok_connect_account DAG); {after}",
        url=f"{_ui_base_url()}/dags/tiktok_connect_account",
        dedupe_key=f"consent|{open_id}|{warning.threshold}",
    )


def deadline_alert(context: Mapping[str, Any], *, hours: float | None = None) -> Alert:
    """The message for a DAG run that missed its Deadline Alert (the context Airflow gives the callback)."""
    run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    dag_id, run_id = str(run.get("dag_id", "")), str(run.get("dag_run_id") or run.get("run_id") or "")
    late = f"{hours:g} hours" if hours is not None else "its deadline"
    return Alert(
        kind="deadline_missed",
        title=f"TikTok DAG run not finished {late} after it was queued: {dag_id}",
        facts={
            "DAG": dag_id,
            "Run": run_id,
            "Queued at": str(run.get("queued_at") or ""),
            "State": str(run.get("state") or ""),
            "Deadline": str(deadline.get("deadline_time") or ""),
        },
        next_step="Open the run: a task stuck in queued/deferred (no free worker or tiktok_api pool slot), "
        "or an account task retrying a 429/5xx. Its runbook says what to do.",
        url=dag_run_url(dag_id, run_id),
        dedupe_key=f"deadline|{dag_id}|{run_id}",
    )


_SENT: set[str] = set()


class AlertNotSent(Exception):
    """The alert destination refused or could not be reached (the message never names its URL)."""


def deliver(alert: Alert, conn_id: str = ALERTS_CONN_ID) -> bool:
    """Send ``alert`` where the connection ``conn_id`` says; return whether a message went out."""
    if alert.dedupe_key and alert.dedupe_key in _SENT:
        log.info("Alert %s already sent by this process; not sent again", alert.dedupe_key)
        return False
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
    except Exception:
        log.warning("No Airflow connection %r: the alert %r was not sent (add one to get alerts)", conn_id, alert.title)
        return False
    kind = (conn.conn_type or "").lower()
    extra = conn.extra_dejson or {}
    if kind in ("http", "https", "webhook"):
        _post_webhook(alert, conn, extra)
    elif kind in ("smtp", "email"):
        _send_email(alert, conn_id, extra)
    else:
        raise ValueError(f"connection {conn_id!r} has type {conn.conn_type!r}: use http (a webhook) or smtp")
    if alert.dedupe_key:
        _SENT.add(alert.dedupe_key)
    log.info("Sent alert %r through connection %r", alert.title, conn_id)
    return True


def webhook_url(conn: Any, extra: Mapping[str, Any]) -> str:
    host = (conn.host or "").strip()
    if host.startswith(("http://", "https://")):
        return host
    scheme = conn.schema or "https"
    port = f":{conn.port}" if conn.port else ""
    return f"{scheme}://{host}{port}{extra.get('endpoint') or ''}"


def slack_text(alert: Alert) -> str:
    """The message as a Slack ``text``: ``&``, ``<`` and ``>`` escaped, so that creator text cannot
    mention ``<!channel>`` or hide a link as ``<http://evil|Reconnect here>`` (Slack's own rule for text)."""
    return alert.text().replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _post_webhook(alert: Alert, conn: Any, extra: Mapping[str, Any]) -> None:
    import requests

    body = {"text": slack_text(alert)} if extra.get("format") == "slack" else alert.as_json()
    headers = {"Content-Type": "application/json"}
    if conn.password:  # a bearer token the receiver wants (never part of the message)
        headers["Authorization"] = f"Bearer {conn.password}"
    # The URL is often the credential itself (a Slack webhook's path): requests' errors quote it, so
    # they are replaced by one that names the connection, and raised outside their handler.
    problem = None
    try:
        response = requests.post(
            webhook_url(conn, extra),
            data=json.dumps(body, ensure_ascii=False).encode(),
            headers=headers,
            timeout=float(extra.get("timeout") or WEBHOOK_TIMEOUT_SECONDS),
        )
    except requests.RequestException as exc:
        problem = f"not reached ({type(exc).__name__})"
    else:
        if response.status_code >= 400:
            problem = f"answered HTTP {response.status_code}"
    if problem:
        raise AlertNotSent(f"The webhook of connection {conn.conn_id!r} {problem}: the alert was not sent")


def _send_email(alert: Alert, conn_id: str, extra: Mapping[str, Any]) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    to = [a.strip() for a in str(extra.get("to") or "").split(",") if a.strip()]
    if not to:
        raise ValueError(f'connection {conn_id!r} has no "to" extra: the addresses to alert')
    body = f"<pre>{html.escape(alert.text())}</pre>"  # creator text is data, never HTML
    with SmtpHook(smtp_conn_id=conn_id) as hook:
        hook.send_email_smtp(to=to, subject=alert.title[:200], html_content=body)


class TikTokAlertNotifier(BaseNotifier):
    """Send one message for a failed TikTok task: account, endpoint, log_id, next step, link; no secret.

    Use it as ``on_failure_callback=TikTokAlertNotifier()`` on the per-account tasks and the checks.

    :param alerts_conn_id: where messages go (``http`` webhook or ``smtp`` connection).
    :param tiktok_conn_id: the TikTok connection whose secrets are scrubbed from messages.
    """

    template_fields = ()  # nothing is rendered: a message carries creator text, which is never a template

    def __init__(self, alerts_conn_id: str = ALERTS_CONN_ID, tiktok_conn_id: str = TIKTOK_CONN_ID) -> None:
        super().__init__()
        self.alerts_conn_id = alerts_conn_id
        self.tiktok_conn_id = tiktok_conn_id

    def notify(self, context: Any) -> None:
        alert = failure_alert(context, secrets=known_secrets(self.tiktok_conn_id))
        deliver(alert, self.alerts_conn_id)


def alert_reconnect_needed(open_id: str, name: str | None, reason: str = "", conn_id: str = ALERTS_CONN_ID) -> bool:
    """Tell on-call that an account must be reconnected (called where an account becomes reauth_required)."""
    return deliver(reconnect_alert(open_id, name, reason=reason, secrets=known_secrets()), conn_id)


def alert_consent_warnings(warnings: Iterable[Any], conn_id: str = ALERTS_CONN_ID) -> int:
    """Send one message per consent warning (``AccountsAdmin.consent_warnings()``); return how many went out."""
    return sum(deliver(consent_alert(w), conn_id) for w in warnings)


def deadline_missed(context: Mapping[str, Any] | None = None, hours: float | None = None, **_: Any) -> None:
    """Deadline Alert callback (``SyncCallback``): the run is not finished in time."""
    deliver(deadline_alert(context or {}, hours=hours))


async def deadline_missed_async(context: Mapping[str, Any] | None = None, hours: float | None = None, **_: Any) -> None:
    """Deadline Alert callback for the triggerer (``AsyncCallback``)."""
    import asyncio

    await asyncio.to_thread(deadline_missed, context, hours)
