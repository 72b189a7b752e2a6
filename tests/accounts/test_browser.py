"""The accounts UI in headless Chromium: log in, connect through TikTok's consent page, watch, disconnect, purge.

The browser is Debian's chromium (``apt-get install chromium``), driven by Playwright, as in
``tests/deploy/test_browser.py``. It runs first in the folder (``FIRST_FILES`` in tests/conftest.py),
on a stack with only the account `make up` connected. The screenshot of the accounts page is kept at
``docs/accounts-page.png``: for it, 30 days of follower history are written into
``profile_snapshots`` (a fresh stack has one day), and the refresh token of the account `make up`
connected is moved to 5 days before its expiry, so the page shows its charts and a consent warning.
The picture goes to test-artifacts/accounts/; ``UPDATE_DOCS_SCREENSHOT=1`` also refreshes the docs copy.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text
from stack_support import chromium_page

from tests.accounts.conftest import AccountsStack
from tiktok_ops.settings import ROOT

if TYPE_CHECKING:
    from playwright.sync_api import FrameLocator, Locator, Page

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SHOTS = ROOT / "test-artifacts" / "accounts"
DOCS_SHOT = ROOT / "docs" / "accounts-page.png"
CREATOR = "Noor Browser-Test"


@pytest.fixture(scope="module")
def page(stack: AccountsStack) -> Iterator[Page]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(width=1280) as page:
        yield page


def accounts_frame(page: Page) -> FrameLocator:
    """The accounts page inside the Airflow UI's plugin frame."""
    return page.frame_locator('iframe[title="TikTok accounts"]')


def card(page: Page, open_id: str) -> Locator:
    return accounts_frame(page).locator(f'section.card[data-open-id="{open_id}"]')


def archive_covers_and_early_views(stack: AccountsStack, open_id: str, archive_dir: str) -> list[str]:
    """Archive the account's covers for real (its simulator's CDN -> a local folder, recorded in the
    warehouse) and give its latest videos captures at 1 h / 6 h / 24 h after posting, as the cover
    refresh would have kept them had they been posted hours ago. Returns the latest videos' ids."""
    from tiktok_pipeline.archive import ArchiveSettings, CoverArchiver, cover_items

    with stack.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, cover_image_url, create_time FROM tiktok.videos WHERE open_id = :o"
                " ORDER BY create_time DESC, id LIMIT 6"
            ),
            {"o": open_id},
        ).all()
    videos = [{"id": r[0], "cover_image_url": r[1]} for r in rows]
    archiver = CoverArchiver(stack.engine, ArchiveSettings(base=f"file://{archive_dir}"), api_url=stack.sim_url)
    result = archiver.archive(cover_items(open_id, videos), now=datetime.now(UTC))
    assert result.new_versions == len(rows) and not result.failed, result.summary()
    with stack.engine.begin() as conn:
        for n, (video_id, _, posted) in enumerate(rows):
            for hours, views in ((1, 120 + 40 * n), (6, 900 + 150 * n), (24, 2600 + 300 * n)):
                conn.execute(
                    text(
                        "INSERT INTO tiktok.video_captures (video_id, captured_at, open_id, create_time, view_count,"
                        " like_count, comment_count, share_count, source) VALUES (:v, :c, :o, :t, :views, 0, 0, 0,"
                        " 'query') ON CONFLICT DO NOTHING"
                    ),
                    {"v": video_id, "c": posted + timedelta(hours=hours), "o": open_id, "t": posted, "views": views},
                )
    return [r[0] for r in rows]


def seed_history(stack: AccountsStack, open_id: str, growth: float, *, required: bool = True) -> None:
    """Thirty days of follower counts before today's real snapshot, growing by ``growth`` (a fraction) to it.

    :param required: False for the stack's other accounts, which earlier tests of the session may
        have disconnected or purged before their first snapshot: those get no history.
    """
    today = datetime.now(UTC).date()
    with stack.engine.begin() as conn:
        current = conn.execute(
            text("SELECT follower_count FROM tiktok.profile_snapshots WHERE open_id = :o ORDER BY snapshot_date DESC"),
            {"o": open_id},
        ).scalar()
        if current is None and not required:
            return
        assert current is not None, f"{open_id} has no snapshot yet"
        for back in range(30, 0, -1):
            count = int(current * (1 - growth * back / 30) + (back % 5) * current * 0.002)
            conn.execute(
                text(
                    "INSERT INTO tiktok.profile_snapshots (open_id, snapshot_date, follower_count, captured_at)"
                    " VALUES (:o, :d, :f, :c) ON CONFLICT DO NOTHING"
                ),
                {"o": open_id, "d": today - timedelta(days=back), "f": count, "c": datetime.now(UTC)},
            )


def first_runs_done(stack: AccountsStack, open_id: str) -> bool:
    """The account has a profile snapshot and a finished video sync (what its card shows as dates)."""
    with stack.engine.connect() as conn:
        snapshot, synced = conn.execute(
            text(
                "SELECT (SELECT max(captured_at) FROM tiktok.profile_snapshots WHERE open_id = :o),"
                " (SELECT max(finished_at) FROM tiktok.sync_state WHERE open_id = :o)"
            ),
            {"o": open_id},
        ).one()
    return snapshot is not None and synced is not None


def test_connect_watch_disconnect_and_purge_in_the_browser(page: Page, stack: AccountsStack) -> None:
    from playwright.sync_api import expect

    # Log in to Airflow; the navigation's TikTok accounts entry shows the page inside the UI.
    page.goto(f"{stack.url}/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(stack.password("admin"))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)
    page.get_by_role("link", name="TikTok accounts").click()
    page.wait_for_url(re.compile(r"/plugin/tiktok-accounts"))
    frame = accounts_frame(page)
    expect(frame.get_by_role("button", name="Connect account")).to_be_visible()
    page.screenshot(path=SHOTS / "01-in-the-airflow-ui.png")

    # Connect a creator: TikTok's (the simulator's) consent page opens in the top window, not the frame.
    account = stack.sim.create_account(videos=15, display_name=CREATOR)
    open_id = account["open_id"]
    frame.get_by_role("button", name="Connect account").click()
    page.wait_for_url(re.compile(r"/v2/auth/authorize/\?"))
    page.get_by_text(CREATOR).click()
    page.screenshot(path=SHOTS / "02-consent.png")
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(re.compile(r"/plugin/tiktok-accounts/tiktok-accounts/\?done=connected"))
    expect(frame.get_by_role("status")).to_contain_text(f"Connected {CREATOR}")
    expect(card(page, open_id).locator(".badge")).to_have_text("active")

    # Nobody triggers anything: the first profile snapshot and video backfill run by themselves.
    # Waited for in the warehouse, then seen on the page: reloading the Airflow UI every 3 s while
    # the runs ran cost more CPU than the runs (ci7, three test workers on two cores: 244 s).
    deadline = time.monotonic() + 420
    while not first_runs_done(stack, open_id):
        assert time.monotonic() < deadline, f"the first runs did not finish: {stack.accounts().get(open_id)}"
        time.sleep(3)
    page.goto(f"{stack.url}/plugin/tiktok-accounts")
    text_now = card(page, open_id).inner_text()
    assert re.search(r"Last profile snapshot\s+\d{4}-\d\d-\d\d", text_now), text_now
    assert re.search(r"Last successful video sync\s+\d{4}-\d\d-\d\d", text_now), text_now
    assert re.search(r"Videos stored\s+15\b", text_now), text_now
    # The card links the account's own task once the metadata DB has it (the run's page until then).
    task_link = re.compile(r"/dags/tiktok_profile_snapshot/runs/connect__[^/]+/tasks/snapshot_profile/mapped/\d+$")
    deadline = time.monotonic() + 60
    while True:
        href = card(page, open_id).get_by_role("link", name="Profile snapshot").get_attribute("href") or ""
        if task_link.search(href):
            break
        assert time.monotonic() < deadline, f"the Profile snapshot link never named the task: {href}"
        time.sleep(2)
        page.goto(f"{stack.url}/plugin/tiktok-accounts")

    # With a month of history the card draws its follower chart; a consent running out is flagged.
    # The stack's other accounts that earlier tests of the session left active (they may have
    # disconnected them): a consent warning is only shown for an active account.
    with stack.engine.connect() as conn:
        active = set(conn.execute(text("SELECT open_id FROM tiktok.accounts WHERE status = 'active'")).scalars())
    others = [o for o in stack.accounts() if o != open_id and o in active]
    seed_history(stack, open_id, 0.12)
    for other in others:
        seed_history(stack, other, -0.03, required=False)
        with stack.engine.begin() as conn:
            conn.execute(
                text("UPDATE tiktok.accounts SET refresh_expires_at = now() + interval '5 days' WHERE open_id = :o"),
                {"o": other},
            )
    latest = archive_covers_and_early_views(stack, open_id, str(SHOTS / "cover-archive"))
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(f"{stack.url}/plugin/tiktok-accounts")
    expect(card(page, open_id).locator(".chart svg polyline")).to_have_count(1)
    # Its latest videos, with their ARCHIVED covers (served by the plugin by content hash) and early-views curves.
    tiles = card(page, open_id).locator("figure.video")
    expect(tiles).to_have_count(6)
    assert [tiles.nth(i).get_attribute("data-video-id") for i in range(6)] == latest
    covers = card(page, open_id).locator("img.cover")
    expect(covers).to_have_count(6)
    for i in range(6):
        covers.nth(i).scroll_into_view_if_needed()
        expect(covers.nth(i)).to_have_attribute("src", re.compile(r"/covers/[0-9a-f]{64}$"))
    page.wait_for_timeout(500)
    widths = [covers.nth(i).evaluate("img => img.complete && img.naturalWidth") for i in range(6)]
    assert all(isinstance(w, int) and w > 0 for w in widths), widths
    expect(card(page, open_id).locator("svg.early polyline")).to_have_count(6)
    points = card(page, open_id).locator("svg.early").first.locator("circle")
    expect(points).to_have_count(3)
    src = covers.first.get_attribute("src") or ""
    answer = page.request.get(f"{stack.url}{src}" if src.startswith("/") else src)
    assert answer.status == 200 and answer.headers["content-type"].startswith("image/")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    unknown = page.request.get(f"{stack.url}{src[:-64]}{'0' * 64}" if src.startswith("/") else src[:-64] + "0" * 64)
    assert unknown.status == 404, "only blobs the warehouse lists are served"
    if others:
        expect(card(page, others[0])).to_contain_text("(7-day warning)")
        expect(card(page, others[0])).to_have_class(re.compile("unhealthy"))
    page.screenshot(path=SHOTS / "03-accounts.png")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):  # refresh the README's picture only when asked
        page.screenshot(path=DOCS_SHOT, full_page=True)

    # The grid link opens the account's task instance in Airflow, in the top window.
    card(page, open_id).get_by_role("link", name="Profile snapshot").click()
    page.wait_for_url(re.compile(r"/dags/tiktok_profile_snapshot/runs/.+/tasks/snapshot_profile/mapped/\d+$"))
    assert page.frame_locator('iframe[title="TikTok accounts"]').locator("body").count() == 0
    page.screenshot(path=SHOTS / "04-task-instance.png")

    # Disconnect (revoked at TikTok), then purge with the typed confirmation.
    page.goto(f"{stack.url}/plugin/tiktok-accounts")
    card(page, open_id).get_by_role("button", name="Disconnect").click()
    expect(frame.get_by_role("status")).to_contain_text(f"Disconnected {CREATOR}")
    expect(card(page, open_id).locator(".badge")).to_have_text("disconnected")
    assert [t for t in stack.sim.tokens(open_id) if t["status"] == "active"] == []
    card(page, open_id).get_by_label("Type the open_id to confirm the purge").fill(open_id)
    card(page, open_id).get_by_role("button", name="Purge").click()
    expect(frame.get_by_role("status")).to_contain_text(f"Purged {open_id}")  # its name went with its rows
    expect(card(page, open_id)).to_have_count(0)
    assert open_id not in stack.accounts()
    page.screenshot(path=SHOTS / "05-purged.png")
