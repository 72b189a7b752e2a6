"""Delete archived images nothing refers to any more: what a purged account leaves in storage.

Purging an account deletes its ``tiktok.cover_archive`` rows (with every other row of it), but the
images themselves are objects in the archive's storage, shared by content: ``tiktok.archive_blobs``
holds one row per object, and several accounts' videos may show the same bytes. The daily
``check_consent`` task therefore sweeps: each blob no ``cover_archive`` row refers to any more is
deleted from storage, then forgotten.

Safe against an archive task running at the same time, blob by blob, in one transaction each:

1. ``DELETE`` the blob's row where nothing refers to it: the row stays locked until the end;
2. delete the object; a failure rolls the row back (the next sweep tries again);
3. commit.

The archiver reads the blob's row ``FOR KEY SHARE`` in the transaction that records a cover, so it
either locks the row first (the sweep's ``DELETE`` then fails on the foreign key and leaves the blob)
or waits for the sweep to commit, finds no row, and writes the object again.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

log = logging.getLogger(__name__)

#: Blobs looked at per sweep: the rest wait for the next day.
DEFAULT_LIMIT = 10_000


@dataclass
class SweepResult:
    deleted: int = 0
    bytes_freed: int = 0
    kept_in_use: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "blobs_deleted": self.deleted,
            "bytes_freed": self.bytes_freed,
            "blobs_back_in_use": self.kept_in_use,
            "blobs_not_deleted": len(self.failed),
        }


def unreferenced(engine: Engine, *, limit: int = DEFAULT_LIMIT) -> list[str]:
    """The blobs no cover or avatar row refers to (oldest first)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT b.sha256 FROM tiktok.archive_blobs AS b WHERE NOT EXISTS"
                    " (SELECT 1 FROM tiktok.cover_archive AS c WHERE c.sha256 = b.sha256)"
                    " ORDER BY b.stored_at, b.sha256 LIMIT :limit"
                ),
                {"limit": limit},
            ).scalars()
        )


def _remove(path: Any) -> None:
    with contextlib.suppress(FileNotFoundError):  # gone already (a sweep that could not commit)
        path.unlink()


def sweep_unreferenced_blobs(
    engine: Engine, *, conn_id: str | None = None, limit: int = DEFAULT_LIMIT, opener: Any = None
) -> SweepResult:
    """Delete the stored objects no archive row refers to, and their rows; never raise for one blob.

    :param conn_id: the storage's Airflow connection (``[tiktok] cover_archive_conn_id``).
    :param opener: ``path -> ObjectStoragePath`` (tests); default Airflow's ``ObjectStoragePath``.
    """
    if opener is None:
        from airflow.sdk import ObjectStoragePath

        def opener(path: str) -> Any:
            return ObjectStoragePath(path, conn_id=conn_id)

    result = SweepResult()
    for sha256 in unreferenced(engine, limit=limit):
        try:
            with engine.begin() as conn:
                row = conn.execute(
                    text(
                        "DELETE FROM tiktok.archive_blobs AS b WHERE b.sha256 = :sha AND NOT EXISTS"
                        " (SELECT 1 FROM tiktok.cover_archive AS c WHERE c.sha256 = b.sha256)"
                        " RETURNING b.path, b.bytes"
                    ),
                    {"sha": sha256},
                ).one_or_none()
                if row is None:
                    result.kept_in_use += 1
                    continue
                _remove(opener(row.path))  # inside the transaction: a failure keeps the row
            result.deleted += 1
            result.bytes_freed += int(row.bytes)
        except IntegrityError:
            result.kept_in_use += 1  # an archive task recorded a cover of it meanwhile: it stays
        except Exception as exc:  # storage down, permissions: kept for the next sweep
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            result.failed.append((sha256, reason))
            log.warning("Could not delete the archived image %s (kept for the next sweep): %s", sha256, reason)
    if result.deleted or result.failed:
        log.info(
            "Archive sweep: deleted %d image(s) no longer referred to (%d bytes); %d could not be deleted",
            result.deleted,
            result.bytes_freed,
            len(result.failed),
        )
    return result
