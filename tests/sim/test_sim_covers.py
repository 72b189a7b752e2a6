"""Signed cover (and avatar) URLs: a JPEG while valid, 403 once expired or tampered with."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tiktok_sim.testing import ConnectedAccount, SimulatorProcess, running_simulator

SIX_HOURS = 6 * 3600


@pytest.fixture(scope="module")
def cover_sim() -> Iterator[SimulatorProcess]:
    """A simulator whose clock these tests move."""
    with running_simulator(seed=5, accounts=0) as process:
        yield process


@pytest.fixture
def account(cover_sim: SimulatorProcess) -> ConnectedAccount:
    return cover_sim.connected_account(videos=5)


def cover_url(account: ConnectedAccount) -> tuple[str, str]:
    video = account.api.video_list("id,cover_image_url", max_count=1).json()["data"]["videos"][0]
    return video["id"], video["cover_image_url"]


def test_cover_url_has_the_documented_shape_and_serves_a_jpeg(
    cover_sim: SimulatorProcess, account: ConnectedAccount
) -> None:
    video_id, url = cover_url(account)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == cover_sim.base_url
    assert parts.path == f"/cdn/cover/{video_id}.jpeg"
    query = parse_qs(parts.query)
    expires = int(query["x-expires"][0])
    assert abs(expires - (cover_sim.admin.now() + SIX_HOURS)) < 5
    assert len(query["x-signature"][0]) == 64
    image = requests.get(url, timeout=10)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    assert image.content.startswith(b"\xff\xd8\xff") and image.content.endswith(b"\xff\xd9")
    assert 100 < len(image.content) < 2000


def test_cover_url_expires_after_six_hours_and_query_gives_a_fresh_one(
    cover_sim: SimulatorProcess, account: ConnectedAccount
) -> None:
    video_id, url = cover_url(account)
    cover_sim.admin.advance_clock(SIX_HOURS - 60)
    assert requests.get(url, timeout=10).status_code == 200
    cover_sim.admin.advance_clock(61)
    assert requests.get(url, timeout=10).status_code == 403
    api = cover_sim.display(cover_sim.get_tokens(account.open_id))  # the 2-hour access token has expired
    fresh = api.video_query("cover_image_url", [video_id]).json()["data"]["videos"][0]["cover_image_url"]
    assert fresh != url
    assert requests.get(fresh, timeout=10).status_code == 200


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: url[:-1] + ("0" if url[-1] != "0" else "1"),
        lambda url: url.replace("x-expires=", "x-expires=9"),
        lambda url: url.split("?")[0],
        lambda url: url.replace("/cdn/cover/", "/cdn/cover/1"),
    ],
    ids=["signature", "expiry", "no-query", "other-video"],
)
def test_a_tampered_cover_url_is_forbidden(account: ConnectedAccount, tamper: object) -> None:
    _, url = cover_url(account)
    assert callable(tamper)
    answer = requests.get(tamper(url), timeout=10)
    assert answer.status_code == 403
    assert answer.headers["content-type"].startswith("text/plain")


def test_cover_ttl_is_configurable(cover_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    cover_sim.admin.set_config(cover_ttl=60)
    try:
        _, url = cover_url(account)
    finally:
        cover_sim.admin.set_config(cover_ttl=SIX_HOURS)
    cover_sim.admin.advance_clock(61)
    assert requests.get(url, timeout=10).status_code == 403


def test_cover_urls_follow_the_host_the_client_used(cover_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    port = urlsplit(cover_sim.base_url).port
    answer = requests.post(
        f"http://localhost:{port}/v2/video/list/",
        params={"fields": "cover_image_url"},
        json={"max_count": 1},
        headers=account.tokens.headers,
        timeout=10,
    )
    url = answer.json()["data"]["videos"][0]["cover_image_url"]
    assert url.startswith(f"http://localhost:{port}/cdn/cover/")
    assert requests.get(url, timeout=10).status_code == 200


def test_avatar_urls_are_signed_and_served_too(cover_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    user = account.api.user_info("avatar_url,avatar_url_100,avatar_large_url").json()["data"]["user"]
    for url in user.values():
        assert f"/cdn/avatar/{account.open_id}_" in url
        assert requests.get(url, timeout=10).headers["content-type"] == "image/jpeg"
    cover_sim.admin.advance_clock(SIX_HOURS + 1)
    assert requests.get(user["avatar_url"], timeout=10).status_code == 403


def test_ground_truth_avatar_urls_work_and_unknown_cdn_paths_are_404(
    cover_sim: SimulatorProcess, account: ConnectedAccount
) -> None:
    user = cover_sim.admin.account(account.open_id)["user"]
    assert requests.get(user["avatar_large_url"], timeout=10).status_code == 200
    for path in ("/cdn/poster/1.jpeg", "/cdn/cover/1.png"):
        assert requests.get(f"{cover_sim.base_url}{path}", timeout=10).status_code == 404
