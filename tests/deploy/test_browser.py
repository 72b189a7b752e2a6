"""The UI as a user meets it after `make up`, in headless Chromium driven by Playwright.

Log in, find the four DAGs, read their docs and trigger forms, trigger ``tiktok_video_backfill``
with its form filled in, and watch the run succeed; then the connection form offers the TikTok
Display API type. Screenshots go to test-artifacts/browser/. The browser is Debian's chromium
(``apt-get install chromium``; .ci/run installs it): Playwright cannot download its own here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
import requests
from sqlalchemy import create_engine, text
from stack_support import chromium_page
from test_untrusted_text import HOSTILE, HTML_PART, LABEL_PART

from tiktok_ops.settings import ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.deploy.conftest import DeployedStack

pytestmark = [pytest.mark.deploy, pytest.mark.integration, pytest.mark.timeout(600)]

SHOTS = ROOT / "test-artifacts" / "browser"
UNTRUSTED_SHOTS = ROOT / "test-artifacts" / "untrusted-text"
DAG_IDS = sorted(p.stem for p in (ROOT / "dags").glob("tiktok_*.py"))
BACKFILL = "tiktok_video_backfill"


@pytest.fixture(scope="module")
def page(ui_stack: DeployedStack) -> Iterator[Page]:
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    with chromium_page(width=1400) as page:
        yield page


def shot(page: Page, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    page.screenshot(path=path)
    return path


@pytest.fixture(autouse=True)
def _screenshot_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "page" in request.fixturenames:
        shot(request.getfixturevalue("page"), f"failed-{request.node.name}")


def docs_title(dag_id: str) -> str:
    """The first heading of the DAG file's docstring (its doc_md), as the UI renders it."""
    source = (ROOT / "dags" / f"{dag_id}.py").read_text()
    heading = re.search(r"^#+ (.+)$", source, re.MULTILINE)
    assert heading, f"{dag_id} has no heading in its doc_md"
    return re.sub(r"[*`]", "", heading.group(1)).strip()


def test_make_up_prints_the_ui_and_the_login(ui_stack: DeployedStack) -> None:
    out = ui_stack.start_output
    assert f"UI        {ui_stack.url}" in out
    assert f"log in    admin / {ui_stack.password}" in out
    assert "LocalExecutor: api-server, scheduler, dag-processor, triggerer" in out
    assert "1 simulated accounts connected" in out
    # The password is generated once and kept: the api-server did not print or replace it.
    assert ui_stack.password not in "".join(ui_stack.log(n) for n in ("api-server", "scheduler", "dag-processor"))
    again = subprocess.run(
        [sys.executable, "-m", "tiktok_tools.up", "start"], env=ui_stack.env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
    status = subprocess.run(
        [sys.executable, "-m", "tiktok_tools.up", "status"], env=ui_stack.env, capture_output=True, text=True
    )
    assert status.returncode == 0, status.stdout
    assert "scheduler: healthy" in status.stdout and "dag_processor: healthy" in status.stdout, status.stdout


def test_the_api_knows_the_dags_and_the_tiktok_connection_type(ui_stack: DeployedStack) -> None:
    assert ui_stack.api("GET", "/api/v2/importErrors")["total_entries"] == 0
    dags = {d["dag_id"]: d for d in ui_stack.api("GET", "/api/v2/dags?limit=100")["dags"]}
    assert sorted(dags) == DAG_IDS
    for dag_id in DAG_IDS:
        details = ui_stack.api("GET", f"/api/v2/dags/{dag_id}/details")
        assert docs_title(dag_id) in details["doc_md"]
    providers = {p["package_name"] for p in ui_stack.api("GET", "/api/v2/providers?limit=100")["providers"]}
    assert "airflow-tiktok-display" in providers
    hooks = {h["connection_type"]: h for h in ui_stack.api("GET", "/ui/connections/hook_meta")}
    assert hooks["tiktok"]["hook_name"] == "TikTok Display API"
    assert "token_encryption_key" in hooks["tiktok"]["extra_fields"]


def test_log_in_and_find_the_four_dags(page: Page, ui_stack: DeployedStack) -> None:
    page.goto(f"{ui_stack.url}/")
    page.get_by_label("Username").wait_for()
    assert "/auth/login" in page.url
    shot(page, "01-login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(ui_stack.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)

    page.goto(f"{ui_stack.url}/dags")
    for dag_id in DAG_IDS:
        page.get_by_role("link", name=dag_id, exact=True).wait_for()
    page.get_by_text(f"{len(DAG_IDS)} Dags").wait_for()
    shot(page, "02-dags")


def test_every_dag_shows_its_docs_and_trigger_form(page: Page, ui_stack: DeployedStack) -> None:
    for dag_id in DAG_IDS:
        page.goto(f"{ui_stack.url}/dags/{dag_id}")
        page.get_by_role("button", name="Dag Docs").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text(docs_title(dag_id)).wait_for()
        if dag_id == BACKFILL:
            shot(page, "03-docs")
        page.keyboard.press("Escape")
        dialog.wait_for(state="hidden")

        page.get_by_role("button", name="Trigger Dag").click()
        dialog = page.get_by_role("dialog")
        params = ui_stack.api("GET", f"/api/v2/dags/{dag_id}/details")["params"] or {}
        if not params:  # tiktok_marts_refresh: scheduled on Assets, nothing to fill in
            dialog.get_by_role("button", name="Trigger", exact=True).wait_for()
            page.keyboard.press("Escape")
            dialog.wait_for(state="hidden")
            continue
        dialog.get_by_text("Run Parameters").wait_for()
        for name, param in params.items():
            title = param["schema"].get("title") or name
            dialog.get_by_text(re.compile(rf"^{re.escape(title)}\s*\*?$")).first.wait_for()  # * when required
            if param.get("description"):
                dialog.get_by_text(param["description"], exact=True).wait_for()
        page.keyboard.press("Escape")
        dialog.wait_for(state="hidden")


def test_trigger_the_backfill_from_its_form_and_see_it_succeed(page: Page, ui_stack: DeployedStack) -> None:
    open_id = requests.get(f"{ui_stack.sim_url}/_sim/accounts", timeout=10).json()["accounts"][0]["open_id"]
    page.goto(f"{ui_stack.url}/dags/{BACKFILL}")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    dialog.get_by_role("combobox").click()
    page.get_by_role("option", name=re.compile(r"^whole_history: ")).click()  # every video, not a date range
    dialog.locator("#element_accounts").fill(open_id)
    dialog.locator("input[name=element_lookback_days]").fill("30")
    shot(page, "04-trigger-form")
    dialog.get_by_role("button", name="Trigger", exact=True).click()

    page.wait_for_url(re.compile(rf"/dags/{BACKFILL}/runs/manual__"))
    run_id = page.url.rsplit("/runs/", 1)[1]
    run = ui_stack.api("GET", f"/api/v2/dags/{BACKFILL}/dagRuns/{run_id}")
    assert run["conf"] == {"mode": "whole_history", "accounts": [open_id], "lookback_days": 30}
    assert run["run_type"] == "manual"

    from playwright.sync_api import expect

    # The run's own badge, beside its heading (the task instances below have badges too).
    badge = page.get_by_role("heading", name=run_id, exact=True).locator("xpath=..").get_by_test_id("state-badge")
    deadline = time.monotonic() + 180
    while True:  # the page refreshes a running run by itself; a reload is the fallback
        try:
            expect(badge).to_have_text("Success", timeout=20_000)
            break
        except AssertionError:
            state = ui_stack.api("GET", f"/api/v2/dags/{BACKFILL}/dagRuns/{run_id}")["state"]
            assert time.monotonic() < deadline and state != "failed", f"the run did not succeed (its state: {state})"
            page.reload()
    shot(page, "05-run-succeeded")
    assert ui_stack.api("GET", f"/api/v2/dags/{BACKFILL}/dagRuns/{run_id}")["state"] == "success"

    expected = requests.get(f"{ui_stack.sim_url}/_sim/accounts/{open_id}/video_ids", timeout=10).json()["video_ids"]
    engine = create_engine(ui_stack.database_url(ui_stack.warehouse_db))
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                text("SELECT id FROM tiktok.videos WHERE open_id = :o AND removed_at IS NULL"), {"o": open_id}
            ).scalars()
            assert sorted(map(str, stored)) == sorted(map(str, expected))
    finally:
        engine.dispose()

    page.goto(f"{ui_stack.url}/dags/{BACKFILL}")
    page.get_by_text("select_accounts").first.wait_for()
    shot(page, "06-backfill-grid")


def test_the_connection_form_offers_the_tiktok_type(page: Page, ui_stack: DeployedStack) -> None:
    page.goto(f"{ui_stack.url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").first.click()
    page.get_by_role("option", name="TikTok Display API").click()
    for label in ("API base URL", "Client key", "Client secret"):
        dialog.get_by_text(label, exact=True).wait_for()
    dialog.get_by_text("Extra Fields", exact=True).click()
    dialog.get_by_text("Token encryption key").wait_for()
    shot(page, "07-connection-form")
    page.keyboard.press("Escape")

    page.goto(f"{ui_stack.url}/dags")
    page.get_by_role("link", name=BACKFILL, exact=True).wait_for()
    page.wait_for_load_state("networkidle")
    shot(page, "08-dags-after-runs")


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
def browser_page(page: Page, ui_stack: DeployedStack) -> tuple[Page, list[str]]:
    """The module's page, logged in, and the messages of every dialog it opens from now on."""
    UNTRUSTED_SHOTS.mkdir(parents=True, exist_ok=True)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{ui_stack.url}/dags")
    page.wait_for_load_state("networkidle")
    if "/auth/login" in page.url:  # run alone: the login test has not run
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(ui_stack.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/auth/login" not in url)
    return page, dialogs


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
    for name, path, shown in (
        ("mapped-tasks", f"{snapshot}/tasks/snapshot_profile/mapped", LABEL_PART),
        ("mapped-task", f"{snapshot}/tasks/snapshot_profile/mapped/0", LABEL_PART),
        ("connect-xcom", f"{connect}/tasks/connect/xcom", HTML_PART),
        # The log names the account on one printable line: "Connected account '<script>window.__pwned=…' (open_id …)".
        ("connect-log", f"{connect}/tasks/connect", "Connected account '<script>window.__pwned="),
    ):
        page.goto(f"{ui_stack.url}{path}")
        page.get_by_text(shown).first.wait_for()  # the name is on the page, as text
        page.wait_for_load_state("networkidle")
        page.screenshot(path=UNTRUSTED_SHOTS / f"{name}.png")
        assert page.evaluate("window.__pwned") is None, f"a creator's script ran on {path}"
        assert dialogs == [], f"a creator's script opened a dialog on {path}"
        assert page.locator("img[src='x']").count() == 0, f"a creator's <img> became an element on {path}"
    run_id = hostile_runs["tiktok_connect_account"]
    xcom = ui_stack.api(
        "GET", f"/api/v2/dags/tiktok_connect_account/dagRuns/{run_id}/taskInstances/connect/xcomEntries/return_value"
    )
    assert xcom["value"]["display_name"] == HOSTILE, "stored and returned as typed: data, not a template"
