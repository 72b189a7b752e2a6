"""Purging an account frees its archived images in storage, never one another account still shows.

For real: the simulator's CDN over HTTP, the archiver writing a local folder and an S3-compatible
server (moto), the warehouse in Postgres; the races with an archive task run in two connections.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.integration.test_cover_archive import s3_server  # noqa: F401  (fixture)
from tiktok_pipeline.archive import ArchiveSettings, CoverArchiver, CoverItem, Downloaded, cover_items
from tiktok_pipeline.archive_sweep import sweep_unreferenced_blobs
from tiktok_sim.testing import running_simulator
from tiktok_warehouse.accounts_admin import AccountsAdmin
from tiktok_warehouse.tokens import TokenGrant, TokenStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
JPEG = b"\xff\xd8\xff\xe0" + b"sweep" * 20


#: A connection id of this module's own: Airflow caches a storage's filesystem per connection id, and
#: test_cover_archive's S3 server (under its own id) may be gone by now.
S3_CONN = "cover_archive_sweep_s3_test"


@pytest.fixture
def s3_base(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    """A fresh bucket on the S3 server and this module's connection to it; yields the archive base."""
    import json

    import boto3

    bucket = f"sweep-{uuid.uuid4().hex[:12]}"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    extra = {"endpoint_url": s3_server, "region_name": "us-east-1"}
    connection = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{S3_CONN.upper()}", json.dumps(connection))
    return f"s3://{bucket}/archive"


@pytest.fixture(scope="module")
def sim() -> Any:
    with running_simulator(seed=77, accounts=0, rate_limit=100_000, rate_window=60) as process:
        yield process


def connect(sim: Any, engine: Any, key: str, videos: int) -> Any:
    connected = sim.connected_account(videos=videos)
    TokenStore(engine, key).save_grant(
        TokenGrant(connected.open_id, f"act.{uuid.uuid4().hex}", 7200, f"rft.{uuid.uuid4().hex}", 86400,
                   frozenset({"video.list"}), datetime.now(UTC))
    )  # fmt: skip
    return connected


def covers(account: Any) -> list[CoverItem]:
    data = account.api.video_list("id,cover_image_url", max_count=20).json()["data"]
    return cover_items(account.open_id, data["videos"])


def blob_paths(engine: Any) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT sha256, path FROM tiktok.archive_blobs")).all())


def exists(archiver: CoverArchiver, path: str) -> bool:
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(path, conn_id=archiver.settings.conn_id).exists()


def purge(engine: Any, open_id: str) -> None:
    admin = AccountsAdmin(engine)
    admin.mark_disconnected(open_id, "test", now=T0)
    admin.purge(open_id)


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_a_purge_frees_the_accounts_own_images_and_keeps_a_shared_one(
    storage: str, sim: Any, clean_warehouse: Any, encryption_key: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if storage == "s3":
        settings = ArchiveSettings(base=request.getfixturevalue("s3_base"), conn_id=S3_CONN, pace_seconds=0)
    else:
        settings = ArchiveSettings(base=f"file://{tmp_path}/covers", pace_seconds=0)
    archiver = CoverArchiver(clean_warehouse, settings, api_url=sim.base_url)
    gone, kept = connect(sim, clean_warehouse, encryption_key, 5), connect(sim, clean_warehouse, encryption_key, 3)
    gone_items = covers(gone)
    # One of the purged account's images is also one of the kept account's (two videos, one image).
    shared = CoverItem("cover", f"{kept.open_id}-repost", kept.open_id, gone_items[0].url)
    assert archiver.archive([*gone_items, *covers(kept), shared], now=T0).new_versions == 9
    before = blob_paths(clean_warehouse)
    assert len(before) == 8 and all(exists(archiver, p) for p in before.values())
    with clean_warehouse.connect() as conn:
        own = set(conn.execute(
            text("SELECT sha256 FROM tiktok.cover_archive WHERE open_id = :g EXCEPT"
                 " SELECT sha256 FROM tiktok.cover_archive WHERE open_id = :k"),
            {"g": gone.open_id, "k": kept.open_id},
        ).scalars())  # fmt: skip
    assert len(own) == 4

    assert sweep_unreferenced_blobs(clean_warehouse, conn_id=settings.conn_id).deleted == 0  # nothing purged yet
    purge(clean_warehouse, gone.open_id)
    result = sweep_unreferenced_blobs(clean_warehouse, conn_id=settings.conn_id)

    assert (result.deleted, result.failed) == (4, [])
    assert result.bytes_freed > 0
    after = blob_paths(clean_warehouse)
    assert set(after) == set(before) - own
    assert not any(exists(archiver, before[sha]) for sha in own), "the purged creator's images are still stored"
    assert all(exists(archiver, p) for p in after.values())  # the kept account's, and the shared one
    assert sweep_unreferenced_blobs(clean_warehouse, conn_id=settings.conn_id).deleted == 0  # a rerun: nothing


def orphan(engine: Any, archiver: CoverArchiver) -> tuple[str, Any]:
    """An archived image whose account was purged; return (sha256, its object path)."""
    sha = hashlib.sha256(JPEG).hexdigest()
    path = archiver.object_path(sha, "image/jpeg")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(JPEG)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO tiktok.archive_blobs (sha256, path, bytes, content_type, stored_at)"
                 " VALUES (:s, :p, :b, 'image/jpeg', :now)"),
            {"s": sha, "p": f"{archiver.settings.base}/{sha[:2]}/{path.name}", "b": len(JPEG), "now": T0},
        )  # fmt: skip
    return sha, path


def orphan_and_account(engine: Any, key: str, tmp_path: Path) -> tuple[CoverArchiver, str, Any, str]:
    """A local archive holding an orphaned image, and a connected account that may show it again."""
    archiver = CoverArchiver(engine, ArchiveSettings(base=f"file://{tmp_path}", pace_seconds=0))
    sha, path = orphan(engine, archiver)
    open_id = f"open-{uuid.uuid4().hex}"
    grant = TokenGrant(open_id, "act.x", 7200, "rft.x", 86400, frozenset({"video.list"}), T0)
    TokenStore(engine, key).save_grant(grant)
    return archiver, sha, path, open_id


def test_an_archive_task_taking_the_image_back_first_keeps_it(
    clean_warehouse: Any, encryption_key: str, tmp_path: Path
) -> None:
    _, sha, path, open_id = orphan_and_account(clean_warehouse, encryption_key, tmp_path)
    # An archive task records a cover with these bytes and has not committed yet (as _store does).
    with clean_warehouse.connect() as task:
        with task.begin():
            assert task.execute(
                text("SELECT path FROM tiktok.archive_blobs WHERE sha256 = :s FOR KEY SHARE"), {"s": sha}
            ).scalar()
            task.execute(
                text("INSERT INTO tiktok.cover_archive (kind, subject_id, sha256, open_id, path, bytes, content_type,"
                     " archived_at, checked_at) VALUES ('cover', 'v1', :s, :o, 'p', 1, 'image/jpeg', :t, :t)"),
                {"s": sha, "o": open_id, "t": T0},
            )  # fmt: skip
            results: list[Any] = []
            sweep = threading.Thread(target=lambda: results.append(sweep_unreferenced_blobs(clean_warehouse)))
            sweep.start()
            sweep.join(1.5)
            assert sweep.is_alive(), "the sweep must wait for the task's lock"
        sweep.join(30)
    [result] = results
    assert (result.deleted, result.kept_in_use) == (0, 1)
    assert path.read_bytes() == JPEG and sha in blob_paths(clean_warehouse)


def test_a_sweep_deleting_first_makes_the_archive_task_write_the_image_again(
    clean_warehouse: Any, encryption_key: str, tmp_path: Path
) -> None:
    archiver, sha, path, open_id = orphan_and_account(clean_warehouse, encryption_key, tmp_path)
    deleting, release = threading.Event(), threading.Event()

    class SlowPath:
        """The object's path, whose deletion waits until the archive task is blocked on the row."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def unlink(self) -> None:
            deleting.set()
            assert release.wait(30)
            self.inner.unlink()

    from airflow.sdk import ObjectStoragePath

    results: list[Any] = []
    sweep = threading.Thread(
        target=lambda: results.append(
            sweep_unreferenced_blobs(clean_warehouse, opener=lambda p: SlowPath(ObjectStoragePath(p)))
        )
    )
    sweep.start()
    assert deleting.wait(30)  # the sweep has deleted the row (not committed) and is deleting the object
    from tiktok_pipeline.archive import ArchiveResult

    stored = threading.Thread(
        target=archiver._store,
        args=(CoverItem("cover", "v2", open_id, "http://cdn/x"), Downloaded(JPEG, "image/jpeg"), sha, T0,
              ArchiveResult()),
    )  # fmt: skip
    stored.start()
    stored.join(1.5)
    assert stored.is_alive(), "the archive task must wait for the sweep's row lock"
    release.set()
    sweep.join(30)
    stored.join(30)
    assert results[0].deleted == 1
    # The task found the row gone and wrote the object again: the recorded cover opens.
    assert path.read_bytes() == JPEG and sha in blob_paths(clean_warehouse)
