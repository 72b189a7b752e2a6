"""The archive sweep and a purge against an archive task, when a step fails half way (attack 14b).

Both failed before archive._store locked the account and checked the blob's object; the fixes are in
``tiktok_pipeline/archive.py``. For real: the simulator's CDN over HTTP,
a local archive folder, Postgres.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from tests.integration.test_archive_sweep import JPEG, T0, blob_paths, connect, covers, exists, purge
from tests.integration.test_archive_sweep import sim as sim  # the module-scoped simulator fixture
from tiktok_pipeline.archive import ArchiveResult, ArchiveSettings, CoverArchiver, CoverItem, Downloaded
from tiktok_pipeline.archive_sweep import sweep_unreferenced_blobs

pytestmark = pytest.mark.integration


def test_a_sweep_that_deleted_the_object_but_could_not_commit_leaves_no_cover_pointing_at_nothing(
    sim: Any, clean_warehouse: Any, encryption_key: str, tmp_path: Path
) -> None:
    """The warehouse drops the sweep's session after the object is deleted, before the commit.

    Postgres rolls the row's deletion back: the blob row is there again, its object is not. An
    archive task that then meets the same image (another account showing it, or the creator
    reconnected) trusts the row, writes nothing, and records a cover whose image is gone for good
    (later runs find the same bytes and only touch the row).
    """
    from airflow.sdk import ObjectStoragePath

    settings = ArchiveSettings(base=f"file://{tmp_path}/covers", pace_seconds=0)
    archiver = CoverArchiver(clean_warehouse, settings, api_url=sim.base_url)
    gone = connect(sim, clean_warehouse, encryption_key, 1)
    kept = connect(sim, clean_warehouse, encryption_key, 1)
    [item] = covers(gone)
    assert archiver.archive([item], now=T0).new_versions == 1
    [(_sha, path)] = blob_paths(clean_warehouse).items()
    purge(clean_warehouse, gone.open_id)

    killer = create_engine(clean_warehouse.url)

    class DroppedAtCommit:
        """The object's path: deleting it works; then the sweep's database session is cut (a failover)."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def unlink(self) -> None:
            self.inner.unlink()
            with killer.begin() as conn:
                cut = conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND query LIKE 'DELETE FROM tiktok.archive_blobs%' AND pid <> pg_backend_pid()"
                    )
                ).scalars()
                assert list(cut) == [True]

    result = sweep_unreferenced_blobs(clean_warehouse, opener=lambda p: DroppedAtCommit(ObjectStoragePath(p)))
    killer.dispose()
    assert (result.deleted, len(result.failed)) == (0, 1)  # the sweep says it will try again
    assert not exists(archiver, path)

    # Before the next daily sweep, the kept account shows the same image.
    shared = CoverItem("cover", f"{kept.open_id}-repost", kept.open_id, item.url)
    assert archiver.archive([shared], now=T0).new_versions == 1
    with clean_warehouse.connect() as conn:
        recorded = conn.execute(
            text("SELECT path FROM tiktok.cover_archive WHERE subject_id = :s"), {"s": shared.subject_id}
        ).scalar_one()
    assert exists(archiver, recorded), "a cover was recorded whose archived image no longer exists"


def test_an_archive_task_that_outlives_a_purge_leaves_no_image_of_the_creator_in_storage(
    clean_warehouse: Any, encryption_key: str, tmp_path: Path
) -> None:
    """The account is purged while its cover refresh is archiving (downloaded, not yet recorded).

    The task writes the object, then its row is refused (the account is gone: foreign key); the
    object stays with no row, and the sweep, which only looks at rows, never deletes it: the purged
    creator's image stays in storage for ever.
    """
    from tiktok_warehouse.tokens import TokenGrant, TokenStore

    archiver = CoverArchiver(clean_warehouse, ArchiveSettings(base=f"file://{tmp_path}", pace_seconds=0))
    open_id = f"open-{uuid.uuid4().hex}"
    TokenStore(clean_warehouse, encryption_key).save_grant(
        TokenGrant(open_id, "act.x", 7200, "rft.x", 86400, frozenset({"video.list"}), datetime.now(UTC))
    )
    purge(clean_warehouse, open_id)  # between the task's download and its _store
    sha = hashlib.sha256(JPEG).hexdigest()
    # The task fails for an account that no longer exists: fine, as long as nothing is left behind.
    with contextlib.suppress(IntegrityError):
        archiver._store(
            CoverItem("cover", "v-purged", open_id, "http://cdn/x"), Downloaded(JPEG, "image/jpeg"), sha, T0,
            ArchiveResult(),
        )  # fmt: skip
    sweep_unreferenced_blobs(clean_warehouse)
    left = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert left == [], f"the purged creator's image is still stored, and no sweep will find it: {left}"
