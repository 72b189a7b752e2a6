"""The cover archive for real: the simulator's CDN over HTTP, the warehouse in Postgres, and the
storage both a local folder and an S3-compatible server (moto) started here, through
ObjectStoragePath and the Amazon provider."""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

# Before Airflow loads its plugins: the plugin loader imports plugins/tiktok_provider/responses.py
# under the bare name "responses", which would shadow the library moto builds on.
import moto.server
import pytest
from sqlalchemy import text

from tiktok_pipeline.archive import ArchiveSettings, CoverArchiver, CoverItem, avatar_items, cover_items
from tiktok_sim.testing import ConnectedAccount, running_simulator
from tiktok_warehouse.tokens import TokenGrant, TokenStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
S3_CONN = "cover_archive_s3_test"


@pytest.fixture(scope="module")
def sim() -> Iterator[Any]:
    """A simulator of this module's own: the tests move its clock (tokens outlive the jump)."""
    with running_simulator(seed=1616, accounts=0, rate_limit=100_000, rate_window=60, access_ttl=30 * 86400) as process:
        yield process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port; yields its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
    port = free_port()
    server = moto.server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_base(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket and the aws connection that reaches it; yields the archive base."""
    bucket = f"covers-{uuid.uuid4().hex[:12]}"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": s3_server, "region_name": "us-east-1"},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{S3_CONN.upper()}", json.dumps(connection))
    return f"s3://{bucket}/archive"


@pytest.fixture
def account(sim: Any, clean_warehouse: Any, encryption_key: str) -> ConnectedAccount:
    """A simulator account with 1,000 videos, and its row in the warehouse."""
    connected = sim.connected_account(videos=1000)
    TokenStore(clean_warehouse, encryption_key).save_grant(
        TokenGrant(
            open_id=connected.open_id,
            access_token=f"act.{uuid.uuid4().hex}",
            expires_in=7200,
            refresh_token=f"rft.{uuid.uuid4().hex}",
            refresh_expires_in=86400,
            scopes=frozenset({"video.list"}),
            obtained_at=datetime.now(UTC),
        )
    )
    return connected


def listed_covers(account: ConnectedAccount) -> list[CoverItem]:
    videos, cursor = [], None
    while True:
        data = account.api.video_list("id,cover_image_url", max_count=20, cursor=cursor).json()["data"]
        videos += data["videos"]
        if not data["has_more"]:
            return cover_items(account.open_id, videos)
        cursor = data["cursor"]


def archived(engine: Any, open_id: str) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT kind, subject_id, sha256, path, bytes, content_type, etag FROM tiktok.cover_archive"
                " WHERE open_id = :o"
            ),
            {"o": open_id},
        ).all()


def run_the_archive(sim: Any, engine: Any, account: ConnectedAccount, settings: ArchiveSettings) -> None:
    archiver = CoverArchiver(engine, settings, api_url=sim.base_url)  # the simulator serves its covers itself
    items = listed_covers(account)
    assert len(items) == 1000

    first = archiver.archive(items, now=T0)
    assert (first.downloaded, first.new_versions, first.blobs_written) == (1000, 1000, 1000)
    assert not first.refused and not first.failed
    rows = archived(engine, account.open_id)
    assert len(rows) == 1000 and len({r.sha256 for r in rows}) == 1000
    assert {r.content_type for r in rows} == {"image/jpeg"}
    assert all(r.path == f"{settings.base}/{r.sha256[:2]}/{r.sha256}.jpg" for r in rows)

    # Six hours later every URL is new, but no image changed: nothing is downloaded.
    sim.admin.advance_clock(7 * 3600)
    try:
        items = listed_covers(account)
        second = archiver.archive(items, now=T0 + timedelta(hours=7))
        assert (second.downloaded, second.bytes_downloaded, second.not_modified) == (0, 0, 1000)

        changed = items[3].subject_id
        sim.admin.change_cover(changed)
        third = archiver.archive(items, now=T0 + timedelta(hours=8))
        assert (third.downloaded, third.new_versions, third.not_modified) == (1, 1, 999)
        versions = [r for r in archived(engine, account.open_id) if r.subject_id == changed]
        assert len(versions) == 2  # the old version stays

        # A removed video keeps its archived cover, and it still opens.
        removed = items[5]
        sim.admin.delete_video(removed.subject_id)
        [row] = [r for r in archived(engine, account.open_id) if r.subject_id == removed.subject_id]
        with archiver.open(row.path) as stored:
            content = stored.read()
        assert len(content) == row.bytes and content.startswith(b"\xff\xd8\xff")
        import hashlib

        assert hashlib.sha256(content).hexdigest() == row.sha256
    finally:
        sim.admin.advance_clock(-7 * 3600)


def test_local_folder(sim: Any, clean_warehouse: Any, account: ConnectedAccount, tmp_path: Path) -> None:
    settings = ArchiveSettings(base=f"file://{tmp_path}/covers", pace_seconds=0)
    run_the_archive(sim, clean_warehouse, account, settings)
    files = [p for p in (tmp_path / "covers").rglob("*") if p.is_file()]
    assert len(files) == 1001  # 1,000 covers + the changed one; the unchanged ones never twice


def test_s3_compatible_server(
    sim: Any, clean_warehouse: Any, account: ConnectedAccount, s3_server: str, s3_base: str
) -> None:
    settings = ArchiveSettings(base=s3_base, conn_id=S3_CONN, pace_seconds=0)
    run_the_archive(sim, clean_warehouse, account, settings)
    bucket = s3_base.split("/")[2]
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    keys = [
        o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page["Contents"]
    ]
    assert len(keys) == 1001 and all(k.startswith("archive/") and k.endswith(".jpg") for k in keys)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("oversized", "larger than 5242880 bytes (Content-Length"),
        ("oversized_stream", "larger than 5242880 bytes"),
        ("not_image", "not an image (Content-Type text/html)"),
        ("wrong_magic", "not an image (declared image/jpeg, the bytes are no"),
        ("offhost_redirect", "redirect to another host (cdn-redirect.invalid)"),
    ],
)
def test_hostile_answers_are_refused_and_logged(
    sim: Any,
    clean_warehouse: Any,
    encryption_key: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    fault: str,
    reason: str,
) -> None:
    connected = sim.connected_account(videos=3)
    TokenStore(clean_warehouse, encryption_key).save_grant(
        TokenGrant(connected.open_id, "act.x", 7200, "rft.x", 86400, frozenset({"video.list"}), datetime.now(UTC))
    )
    videos = connected.api.video_list("id,cover_image_url", max_count=20).json()["data"]["videos"]
    items = cover_items(connected.open_id, videos)
    archiver = CoverArchiver(
        clean_warehouse, ArchiveSettings(base=f"file://{tmp_path}", pace_seconds=0, workers=1), api_url=sim.base_url
    )
    sim.admin.fail_next("cdn", fault)  # only the first download gets it
    with caplog.at_level(logging.WARNING, logger="tiktok_pipeline.archive"):
        result = archiver.archive(items, now=T0)
    [(subject, why)] = result.refused
    assert subject == items[0].subject_id and why.startswith(reason)
    assert result.new_versions == 2  # the others are archived
    assert f"Not archiving the cover of {subject}: {reason}" in caplog.text
    assert {r.subject_id for r in archived(clean_warehouse, connected.open_id)} == {i.subject_id for i in items[1:]}


def test_same_host_redirect_is_followed_and_errors_are_retried(
    sim: Any, clean_warehouse: Any, encryption_key: str, tmp_path: Path
) -> None:
    connected = sim.connected_account(videos=2)
    TokenStore(clean_warehouse, encryption_key).save_grant(
        TokenGrant(connected.open_id, "act.x", 7200, "rft.x", 86400, frozenset({"video.list"}), datetime.now(UTC))
    )
    videos = connected.api.video_list("id,cover_image_url", max_count=20).json()["data"]["videos"]
    sleeps: list[float] = []
    archiver = CoverArchiver(
        clean_warehouse,
        ArchiveSettings(base=f"file://{tmp_path}", pace_seconds=0, retries=2, workers=1),
        api_url=sim.base_url,
        sleep=sleeps.append,
    )
    sim.admin.set_faults("cdn", queue=[("samehost_redirect", 1), ("pass", 1), ("internal_error", 2)])
    result = archiver.archive(cover_items(connected.open_id, videos), now=T0)
    assert result.new_versions == 2 and not result.failed
    assert sleeps == [0.5, 1.0]  # two bounded retries with backoff
    sim.admin.set_faults("cdn", queue=[("internal_error", 3)])
    sim.admin.change_cover(videos[0]["id"])
    result = archiver.archive(cover_items(connected.open_id, videos[:1]), now=T0)
    assert result.failed == [(videos[0]["id"], "HTTP 500")]


def test_avatar_is_archived_once_per_content(
    sim: Any, clean_warehouse: Any, encryption_key: str, tmp_path: Path
) -> None:
    connected = sim.connected_account(videos=0)
    TokenStore(clean_warehouse, encryption_key).save_grant(
        TokenGrant(connected.open_id, "act.x", 7200, "rft.x", 86400, frozenset({"video.list"}), datetime.now(UTC))
    )
    archiver = CoverArchiver(
        clean_warehouse, ArchiveSettings(base=f"file://{tmp_path}", pace_seconds=0, workers=1), api_url=sim.base_url
    )
    fields = "avatar_url,avatar_url_100,avatar_large_url"
    user = connected.api.user_info(fields).json()["data"]["user"]
    assert archiver.archive(avatar_items(connected.open_id, user), now=T0).new_versions == 1
    assert archiver.archive(avatar_items(connected.open_id, user), now=T0).not_modified == 1
    sim.admin.change_avatar(connected.open_id)
    assert archiver.archive(avatar_items(connected.open_id, user), now=T0).new_versions == 1
    assert [r.kind for r in archived(clean_warehouse, connected.open_id)] == ["avatar", "avatar"]


def test_without_etags_changes_are_found_by_content(
    sim: Any, clean_warehouse: Any, encryption_key: str, tmp_path: Path
) -> None:
    """A CDN without validators: every run downloads, but unchanged bytes store nothing new."""
    connected = sim.connected_account(videos=4)
    TokenStore(clean_warehouse, encryption_key).save_grant(
        TokenGrant(connected.open_id, "act.x", 7200, "rft.x", 86400, frozenset({"video.list"}), datetime.now(UTC))
    )
    videos = connected.api.video_list("id,cover_image_url", max_count=20).json()["data"]["videos"]
    items = cover_items(connected.open_id, videos)
    archiver = CoverArchiver(
        clean_warehouse, ArchiveSettings(base=f"file://{tmp_path}", pace_seconds=0), api_url=sim.base_url
    )
    sim.admin.set_config(cdn_etag=False)
    try:
        assert archiver.archive(items, now=T0).new_versions == 4
        again = archiver.archive(items, now=T0 + timedelta(hours=1))
        assert (again.downloaded, again.unchanged, again.new_versions, again.blobs_written) == (4, 4, 0, 0)
        sim.admin.change_cover(items[0].subject_id)
        changed = archiver.archive(items, now=T0 + timedelta(hours=2))
        assert (changed.unchanged, changed.new_versions) == (3, 1)
    finally:
        sim.admin.set_config(cdn_etag=True)
    assert all(r.etag is None for r in archived(clean_warehouse, connected.open_id))


def test_a_trickling_download_is_cut_off_at_its_deadline(
    sim: Any, clean_warehouse: Any, encryption_key: str, tmp_path: Path
) -> None:
    # A CDN (or anything a cover link points at) sending a few bytes every quarter second never
    # trips a read timeout; only a deadline for the whole download bounds the task.
    import time

    connected = sim.connected_account(videos=1)
    TokenStore(clean_warehouse, encryption_key).save_grant(
        TokenGrant(connected.open_id, "act.x", 7200, "rft.x", 86400, frozenset({"video.list"}), datetime.now(UTC))
    )
    videos = connected.api.video_list("id,cover_image_url", max_count=20).json()["data"]["videos"]
    settings = ArchiveSettings(base=f"file://{tmp_path}", pace_seconds=0, workers=1, retries=0, deadline_seconds=2)
    archiver = CoverArchiver(clean_warehouse, settings, api_url=sim.base_url)
    sim.admin.fail_next("cdn", "trickle")
    started = time.monotonic()
    result = archiver.archive(cover_items(connected.open_id, videos), now=T0)
    elapsed = time.monotonic() - started
    assert result.failed == [(videos[0]["id"], "slower than 2 s, the deadline of one download and its tries")]
    assert elapsed < 6, f"the download ran {elapsed:.1f} s past its 2 s deadline"
