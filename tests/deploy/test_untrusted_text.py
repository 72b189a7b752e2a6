"""Creator text (display names, bios, titles, embed_html) is data wherever we show it.

It is stored raw in the warehouse (``tiktok.accounts.display_name``, ``tiktok.videos.embed_html``
...): whoever renders it escapes it for what they render into. Here, every place of ours that
shows it, with a name that is a ``<script>``, an ``onerror`` handler, a Jinja template and
terminal escape sequences at once:

- the terminal: ``make demo``'s summary and ``make up``'s list of accounts (control characters
  escaped, one line per account; HTML is harmless there and stays as typed);
- HTML: the simulator's ``embed_html`` (escaped attribute values and text);
- the Airflow UI, where the name is a mapped task's map index, an XCom and a log line: shown as
  text in headless Chromium, no script runs, no dialog opens, the template is not rendered.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
from stack_support import chromium_page

from tiktok_ops.settings import ROOT
from tiktok_tools.demo import printable, summary_table

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.deploy.conftest import DeployedStack

#: Everything at once: HTML that runs script, a Jinja template, a terminal title/clear, a bidi override.
HOSTILE = (
    "<script>window.__pwned='script'</script><img src=x onerror=\"window.__pwned='img';alert(1)\">"
    "{{ conn.tiktok_default.password }}\x1b]0;owned\x07\x1b[2J\u202eevil\r\n"
)
#: What a browser receives of it after the warehouse (the DAGs store it as TikTok sent it).
HTML_PART = HOSTILE.split("\x1b", 1)[0]
#: What the grid's map index shows of it: the label is cut to 100 characters (…), still holding the
#: script, the image and the start of the template.
LABEL_PART = HTML_PART[:99]
SHOTS = ROOT / "test-artifacts" / "untrusted-text"


def test_a_terminal_gets_creator_text_as_data() -> None:
    shown = printable(HOSTILE, limit=1000)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in shown), repr(shown)
    assert "\u202e" not in shown
    assert shown.startswith(HTML_PART), "HTML is harmless in a terminal: it stays as typed"
    assert "\\x1b]0;owned\\x07\\x1b[2J\\u202eevil\\x0d\\x0a" in shown
    assert printable("Yuki Nguyen 🎉 Дарья") == "Yuki Nguyen 🎉 Дарья"
    assert len(printable("x" * 500)) == 60


def test_the_demo_summary_shows_a_hostile_name_on_one_line() -> None:
    rows = [(HOSTILE, "active", "", 3, 3, 1, 10, 3), ("Дарья", "active", "", 1, 1, 1, 5, 1)]
    lines = summary_table(rows)
    assert len(lines) == 4  # header, rule, one line per account
    assert not [c for line in lines for c in line if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0], lines
    assert lines[2].lstrip().startswith("<script>window.__pwned=") and "\u2026" in lines[2], "as typed, cut"
    assert lines[3].lstrip().startswith("Дарья")


def test_the_simulators_embed_html_escapes_what_it_embeds() -> None:
    from tiktok_sim.accounts import AccountStore
    from tiktok_sim.fields import render_video

    store = AccountStore(seed=7, epoch=time.time() - 400 * 86400)
    account = store.create(3)
    account.profile = dataclasses.replace(account.profile, username='x"><script>alert(1)</script><b x="')
    video = render_video(7, account, 0, ["embed_html", "share_url", "video_description"], time.time(), str)

    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[tuple[str, dict[str, str | None]]] = []
            self.text: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.append((tag, dict(attrs)))

        def handle_data(self, data: str) -> None:
            self.text.append(data)

    parser = Tags()
    parser.feed(video["embed_html"])
    assert [tag for tag, _ in parser.tags] == ["blockquote", "section", "script"], video["embed_html"]
    blockquote, _, script = (attrs for _, attrs in parser.tags)
    assert blockquote["cite"] == video["share_url"], "the whole URL, in its attribute"
    assert script["src"] == "https://www.tiktok.com/embed.js"
    assert video["video_description"] in "".join(parser.text)


# -- the Airflow UI, in a browser ------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_runs(ui_stack: DeployedStack) -> dict[str, str]:
    """Connect a simulated creator named HOSTILE, then snapshot its profile; return the run ids."""
    from tiktok_sim.testing import SimulatorAdmin
    from tiktok_tools.simaccounts import connect_conf

    admin = SimulatorAdmin(ui_stack.sim_url)
    account = admin.create_account(videos=3, display_name=HOSTILE)
    runs = {"open_id": account["open_id"]}
    for dag_id, conf in (
        ("tiktok_connect_account", connect_conf(admin, account["open_id"])),
        ("tiktok_profile_snapshot", {"accounts": [account["open_id"]]}),
    ):
        run = ui_stack.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        done = ui_stack.wait_for_run(dag_id, run["dag_run_id"])
        assert done["state"] == "success", done
        runs[dag_id] = run["dag_run_id"]
    return runs


@pytest.fixture(scope="module")
def browser_page(ui_stack: DeployedStack) -> Iterator[tuple[Page, list[str]]]:
    """A logged-in page of headless Chromium, and the messages of every dialog it opened."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(width=1400) as page:
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(f"{ui_stack.url}/")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(ui_stack.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/auth/login" not in url)
        yield page, dialogs


@pytest.mark.deploy
@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_script_display_name_is_only_text_in_the_airflow_ui(
    ui_stack: DeployedStack, hostile_runs: dict[str, str], browser_page: tuple[Page, list[str]]
) -> None:
    page, dialogs = browser_page
    stored = ui_stack.api(
        "GET", f"/api/v2/dags/tiktok_profile_snapshot/dagRuns/{hostile_runs['tiktok_profile_snapshot']}/taskInstances"
    )
    [mapped] = [ti for ti in stored["task_instances"] if ti["task_id"] == "snapshot_profile"]
    from tiktok_pipeline.common import account_label

    # The map index is the name as typed (cut to the grid's label length): no template ran on it.
    assert mapped["rendered_map_index"] == account_label(HOSTILE, None, "unused")
    assert "{{ conn." in mapped["rendered_map_index"]

    snapshot = f"/dags/tiktok_profile_snapshot/runs/{quote(hostile_runs['tiktok_profile_snapshot'], safe='')}"
    connect = f"/dags/tiktok_connect_account/runs/{quote(hostile_runs['tiktok_connect_account'], safe='')}"
    for name, path, text in (
        ("mapped-tasks", f"{snapshot}/tasks/snapshot_profile/mapped", LABEL_PART),
        ("mapped-task", f"{snapshot}/tasks/snapshot_profile/mapped/0", LABEL_PART),
        ("connect-xcom", f"{connect}/tasks/connect/xcom", HTML_PART),
        ("connect-log", f"{connect}/tasks/connect", "(<script>window.__pwned="),
    ):
        page.goto(f"{ui_stack.url}{path}")
        page.get_by_text(text).first.wait_for()  # the name is on the page, as text
        page.wait_for_load_state("networkidle")
        page.screenshot(path=SHOTS / f"{name}.png")
        assert page.evaluate("window.__pwned") is None, f"a creator's script ran on {path}"
        assert dialogs == [], f"a creator's script opened a dialog on {path}"
        assert page.locator("img[src='x']").count() == 0, f"a creator's <img> became an element on {path}"
    run_id = hostile_runs["tiktok_connect_account"]
    xcom = ui_stack.api(
        "GET", f"/api/v2/dags/tiktok_connect_account/dagRuns/{run_id}/taskInstances/connect/xcomEntries/return_value"
    )
    assert xcom["value"]["display_name"] == HOSTILE, "stored and returned as typed: data, not a template"
