"""The CDN serves real JPEG bytes that change only when a cover changes, with ETag / If-None-Match,
and the faults the cover archive must refuse: oversized, not an image, off-host redirect."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tiktok_sim.faults import OVERSIZED_BYTES
from tiktok_sim.testing import ConnectedAccount, SimulatorProcess, running_simulator


@pytest.fixture(scope="module")
def cdn_sim() -> Iterator[SimulatorProcess]:
    """A simulator whose clock and CDN faults these tests change."""
    with running_simulator(seed=9, accounts=0, access_ttl=30 * 86400) as process:
        yield process


@pytest.fixture
def account(cdn_sim: SimulatorProcess) -> ConnectedAccount:
    return cdn_sim.connected_account(videos=3)


def covers(account: ConnectedAccount) -> dict[str, str]:
    videos = account.api.video_list("id,cover_image_url", max_count=20).json()["data"]["videos"]
    return {v["id"]: v["cover_image_url"] for v in videos}


def jpeg_segments(body: bytes) -> list[int]:
    """Walk a baseline JPEG's marker segments up to the scan; fail on anything malformed."""
    assert body[:2] == b"\xff\xd8" and body[-2:] == b"\xff\xd9"
    markers, at = [], 2
    while True:
        assert body[at] == 0xFF, f"no marker at {at}"
        marker = body[at + 1]
        markers.append(marker)
        length = int.from_bytes(body[at + 2 : at + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            return markers
        at += 2 + length


def test_every_cover_is_a_valid_jpeg_of_its_own(account: ConnectedAccount) -> None:
    bodies = {vid: requests.get(url, timeout=10) for vid, url in covers(account).items()}
    for answer in bodies.values():
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "image/jpeg"
        markers = jpeg_segments(answer.content)
        assert markers[:2] == [0xE0, 0xFE]  # JFIF, then the comment that makes each image unique
    assert len({a.content for a in bodies.values()}) == len(bodies) == 3
    assert len({a.headers["etag"] for a in bodies.values()}) == 3


def test_same_bytes_under_a_new_url_until_the_cover_changes(cdn_sim: SimulatorProcess, account: ConnectedAccount):
    video_id, url = next(iter(covers(account).items()))
    first = requests.get(url, timeout=10)
    cdn_sim.admin.advance_clock(7 * 3600)  # the old link expires; the refreshed one differs
    refreshed = covers(account)[video_id]
    assert refreshed != url
    assert requests.get(url, timeout=10).status_code == 403
    again = requests.get(refreshed, timeout=10)
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    # A conditional request for unchanged content: 304, no body.
    unchanged = requests.get(refreshed, headers={"If-None-Match": first.headers["etag"]}, timeout=10)
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert cdn_sim.admin.change_cover(video_id) == 1
    changed = requests.get(refreshed, headers={"If-None-Match": first.headers["etag"]}, timeout=10)
    assert changed.status_code == 200
    assert changed.content != first.content and changed.headers["etag"] != first.headers["etag"]
    jpeg_segments(changed.content)


def test_avatar_changes_for_every_size(cdn_sim: SimulatorProcess, account: ConnectedAccount) -> None:
    fields = "avatar_url,avatar_url_100,avatar_large_url"
    user = account.api.user_info(fields).json()["data"]["user"]
    before = [requests.get(user[f], timeout=10).content for f in fields.split(",")]
    cdn_sim.admin.change_avatar(account.open_id)
    after = [requests.get(user[f], timeout=10).content for f in fields.split(",")]
    assert all(a != b for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize(
    ("fault", "status", "content_type", "check"),
    [
        ("oversized", 200, "image/jpeg", lambda r: len(r.content) == OVERSIZED_BYTES and "content-length" in r.headers),
        ("oversized_stream", 200, "image/jpeg", lambda r: len(r.content) == OVERSIZED_BYTES),
        ("not_image", 200, "text/html", lambda r: b"<html>" in r.content),
        ("wrong_magic", 200, "image/jpeg", lambda r: r.content.startswith(b"<html>")),
        ("offhost_redirect", 302, None, lambda r: r.headers["location"].startswith("http://cdn-redirect.invalid/")),
        ("samehost_redirect", 302, None, lambda r: r.headers["location"] == r.url),
        ("internal_error", 500, "text/plain", lambda r: True),
        # the real image, slowly and without a length
        (
            "trickle",
            200,
            "image/jpeg",
            lambda r: r.content.startswith(b"\xff\xd8") and "content-length" not in r.headers,
        ),
    ],
)
def test_cdn_faults(cdn_sim: SimulatorProcess, account: ConnectedAccount, fault, status, content_type, check) -> None:
    url = next(iter(covers(account).values()))
    cdn_sim.admin.fail_next("cdn", fault)
    try:
        answer = requests.get(url, timeout=30, allow_redirects=False)
    finally:
        cdn_sim.admin.clear_faults("cdn")
    assert answer.status_code == status
    if content_type:
        assert answer.headers["content-type"].startswith(content_type)
    assert check(answer)
    assert requests.get(url, timeout=10).status_code == 200  # the fault was used up
    assert cdn_sim.admin.stats()["endpoints"]["cdn_cover"]["faults"][fault] >= 1
