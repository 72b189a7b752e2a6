"""Audit of the accounts UI (attack12): reproducers of what fails, against the real api-server and simulator.

Every test here is marked ``xfail(strict=True)``: it asserts what *should* happen and fails on the
code as it is, so the suite stays green while the finding is open, and turns red (XPASS) the day a
fix lands -- then drop the mark. Each names its finding in the audit report.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import psycopg2
import pytest
import requests
from sqlalchemy.engine import make_url

from tests.accounts.conftest import SETTINGS, AccountsStack
from tests.accounts.test_http_api import revoke_calls, token_calls

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@contextlib.contextmanager
def read_only_warehouse(stack: AccountsStack) -> Iterator[None]:
    """Make the stack's warehouse read-only (as a hot standby or a full disk makes it) for new sessions.

    Existing sessions are ended, so the api-server's pool (pre-ping) reconnects into read-only ones.
    """
    database = make_url(stack.warehouse_url).database

    def apply(value: str) -> None:
        conn = psycopg2.connect(f"{SETTINGS.pg_server}/postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = {value}')
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database,),
                )
        finally:
            conn.close()

    stack.engine.dispose()
    apply("on")
    try:
        yield
    finally:
        apply("off")
        stack.engine.dispose()


def fresh(stack: AccountsStack, user: str = "admin") -> requests.Session:
    """A logged-in browser that does not reuse connections (the server closes them after a 500)."""
    session = stack.browser(user)
    session.headers["Connection"] = "close"
    return session


def api_server_log(stack: AccountsStack) -> str:
    return (stack.home / "up" / "api-server.log").read_text(errors="replace")


# -- 1 ---------------------------------------------------------------------------------------------


@pytest.mark.xfail(strict=True, reason="audit 1: ?days=² passes str.isdigit() but int() raises: bare 500")
def test_a_non_ascii_digit_in_days_does_not_crash_the_page(stack: AccountsStack) -> None:
    for days in ("\u00b2", "9" * 5000):  # a superscript two; more digits than int() accepts
        answer = fresh(stack).get(f"{stack.app}/", params={"days": days})
        assert answer.status_code == 200, (days[:10], answer.status_code, answer.text[:100])


# -- 2 ---------------------------------------------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="audit 2: disconnect revokes at TikTok before knowing the warehouse can record it; "
    "read-only warehouse -> revoked at TikTok, still 'active' here, bare 500",
)
def test_disconnect_with_a_read_only_warehouse_revokes_nothing_or_says_what_happened(stack: AccountsStack) -> None:
    session = fresh(stack)
    open_id = stack.connect(session)
    _, csrf = stack.page(session)
    revokes = revoke_calls(stack)
    with read_only_warehouse(stack):
        answer = session.post(
            f"{stack.app}/accounts/{open_id}/disconnect", data={"csrf_token": csrf}, allow_redirects=False
        )
    revoked_at_tiktok = all(token["status"] != "active" for token in stack.sim.tokens(open_id))
    status = stack.accounts()[open_id][0]
    # Either nothing happened anywhere (checked first, like the callback does), or both sides agree.
    assert (not revoked_at_tiktok and revoke_calls(stack) == revokes and status == "active") or (
        revoked_at_tiktok and status == "disconnected"
    ), (answer.status_code, revoked_at_tiktok, status)
    assert answer.status_code != 500 and "Internal Server Error" not in answer.text


# -- 3 ---------------------------------------------------------------------------------------------


@pytest.mark.xfail(strict=True, reason="audit 3: callback on a read-only warehouse ends on a bare 500, not a page")
def test_the_callback_on_a_read_only_warehouse_ends_on_a_page_that_says_what_to_do(stack: AccountsStack) -> None:
    session = fresh(stack)
    account = stack.sim.create_account(videos=1)
    back = stack.consent(stack.start_connect(session), account["open_id"])
    calls = token_calls(stack)
    with read_only_warehouse(stack):
        answer = session.get(back, allow_redirects=False)
    assert token_calls(stack) == calls  # holds today: the code is not spent
    assert answer.status_code == 503, (answer.status_code, answer.text[:200])
    assert "read-only" in answer.text and "Nothing was exchanged" in answer.text


# -- 4 ---------------------------------------------------------------------------------------------


@pytest.mark.xfail(strict=True, reason="audit 4: the api-server access log records the callback's code and state")
def test_the_authorization_code_never_reaches_the_api_server_log(stack: AccountsStack) -> None:
    session = fresh(stack)
    account = stack.sim.create_account(videos=1)
    authorize = stack.start_connect(session)
    back = stack.consent(authorize, account["open_id"])
    code = parse_qs(urlsplit(back).query)["code"][0]
    # TikTok's redirect arrives while the Airflow session has expired: the code stays unspent meanwhile.
    anonymous = requests.get(back, headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert anonymous.status_code == 401
    assert session.get(back, allow_redirects=False).status_code == 303
    log = api_server_log(stack)
    assert code not in log and authorize["state"] not in log


# -- 5 ---------------------------------------------------------------------------------------------


@pytest.mark.xfail(
    strict=True, reason="audit 5: a failed connect is logged nowhere: TikTok's log_id is only on the user's page"
)
def test_a_failed_exchange_is_logged_with_the_account_the_error_and_tiktoks_log_id(stack: AccountsStack) -> None:
    session = fresh(stack)
    account = stack.sim.create_account(videos=1)
    authorize = stack.start_connect(session)
    code = stack.sim.mint_code(account["open_id"], ["user.info.basic"], "https://evil.example/callback")
    answer = session.get(stack.callback, params={"code": code, "state": authorize["state"]}, allow_redirects=False)
    assert answer.status_code == 400 and "invalid_grant" in answer.text
    log_id = re.search(r"log_id=(\w+)", answer.text).group(1)
    assert log_id != "none"
    assert log_id in api_server_log(stack), "on-call cannot find this failure in the api-server log"


# -- 6 ---------------------------------------------------------------------------------------------


@pytest.mark.xfail(strict=True, reason="audit 6: a double-submitted Purge ends on 409 'Disconnect first'")
def test_a_double_submitted_purge_says_it_is_done(stack: AccountsStack) -> None:
    session = fresh(stack)
    open_id = stack.connect(session)
    _, csrf = stack.page(session)
    gone = session.post(f"{stack.app}/accounts/{open_id}/disconnect", data={"csrf_token": csrf}, allow_redirects=False)
    assert gone.status_code == 303
    form = {"csrf_token": csrf, "confirm": open_id}
    first = session.post(f"{stack.app}/accounts/{open_id}/purge", data=form, allow_redirects=False)
    assert first.status_code == 303 and open_id not in stack.accounts()
    second = session.post(f"{stack.app}/accounts/{open_id}/purge", data=form, allow_redirects=False)
    assert second.status_code == 303, (second.status_code, second.text[-400:])


# -- 7 ---------------------------------------------------------------------------------------------


@pytest.mark.xfail(strict=True, reason="audit 7: a link can make the page announce a purge that never happened")
def test_a_crafted_link_cannot_announce_a_purge_or_disconnect_that_did_not_happen(stack: AccountsStack) -> None:
    session = fresh(stack)
    open_id = stack.connect(session)
    for done in ("purged", "disconnected"):
        html = session.get(f"{stack.app}/", params={"done": done, "account": open_id, "warn": "runs"}).text
        assert stack.accounts()[open_id][0] == "active"
        assert "Purged " not in html and "Disconnected " not in html, done


# -- 8 ---------------------------------------------------------------------------------------------


@pytest.mark.xfail(strict=True, reason="audit 8: error_description is attacker text shown on our origin")
def test_the_callback_does_not_show_attacker_text_as_tiktoks_answer(stack: AccountsStack) -> None:
    lure = "Your Airflow session expired: call the help desk at +1-555-0100 with your password"
    answer = fresh(stack).get(
        stack.callback, params={"error": "server_error", "error_description": lure}, allow_redirects=False
    )
    assert answer.status_code == 400
    assert "help desk" not in answer.text
