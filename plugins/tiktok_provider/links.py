"""Operator extra links shown on a task instance's page: its runbook and the account's page.

Airflow 3 works a link out on the worker when the task ends (failed or not) and keeps it in XCom;
the UI reads it back from there, so these classes need no registration for the UI (the provider
lists them in ``extra-links`` all the same). Links are relative to ``[api] base_url`` when set,
else to the UI's own origin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: Where the accounts page is mounted on the api-server (the tiktok_accounts plugin's MOUNT).
ACCOUNTS_MOUNT = "/tiktok-accounts"


def _base_url() -> str:
    from airflow.configuration import conf

    return (conf.get("api", "base_url", fallback="") or "").rstrip("/")


class RunbookLink(BaseOperatorLink):
    """The task's runbook: its doc_md (*Task Docs* on the task's page in the UI), or ``[tiktok] runbook_url``.

    With ``[tiktok] runbook_url`` set (a team's wiki page of runbooks), the link is that URL with
    the anchor ``#<dag_id>.<task_id>``.
    """

    name = "Runbook"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.configuration import conf

        dag_id, task_id = quote(ti_key.dag_id, safe=""), quote(ti_key.task_id, safe="")
        external = (conf.get("tiktok", "runbook_url", fallback="") or "").strip()
        if external:
            return f"{external.split('#', 1)[0]}#{dag_id}.{task_id}"
        return f"{_base_url()}/dags/{dag_id}/tasks/{task_id}"


class AccountLink(BaseOperatorLink):
    """The account's card on the TikTok accounts page (its status, consent, last runs)."""

    name = "Account"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        open_id: Any = getattr(operator, "open_id", None)
        if not isinstance(open_id, str) or not open_id:
            return ""  # the UI greys out an empty link
        return f"{_base_url()}{ACCOUNTS_MOUNT}/#account-{quote(open_id, safe='')}"


def tiktok_profile_url(value: Any) -> str:
    """A profile deep link fit for an href: https on tiktok.com (or a subdomain) only, else ``""``.

    The link comes from TikTok's answer, i.e. outside our control: anything else (``javascript:``,
    another host, credentials in the URL) is dropped rather than shown as a button.
    """
    from urllib.parse import urlsplit

    if not isinstance(value, str) or len(value) > 2048:
        return ""
    try:
        parts = urlsplit(value.strip())
        host = (parts.hostname or "").lower()
    except ValueError:
        return ""
    if parts.scheme != "https" or parts.username or parts.password or parts.port not in (None, 443):
        return ""
    if host != "tiktok.com" and not host.endswith(".tiktok.com"):
        return ""
    return value.strip()


class TikTokProfileLink(BaseOperatorLink):
    """The creator's TikTok profile (``profile_deep_link``), when the task fetched it (profile snapshots)."""

    name = "TikTok profile"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return tiktok_profile_url(getattr(operator, "profile_deep_link", None))


EXTRA_LINKS = (RunbookLink(), AccountLink())
PROFILE_LINKS = (*EXTRA_LINKS, TikTokProfileLink())
