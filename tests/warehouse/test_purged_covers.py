"""A purged account's archived covers are no longer served by the accounts page's /covers/{sha256}."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _account_with_cover(engine: Any, open_id: str, body: bytes, kind: str = "avatar") -> str:
    sha = hashlib.sha256(body).hexdigest()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tiktok.accounts (open_id, display_name, status, connected_at, updated_at,"
                " access_token_enc, refresh_token_enc, access_expires_at, refresh_expires_at, disconnected_at)"
                " VALUES (:o, 'Ana', 'disconnected', :now, :now, 'x', 'x', :now, :now, :now)"
                " ON CONFLICT DO NOTHING"
            ),
            {"o": open_id, "now": NOW},
        )
        conn.execute(
            text(
                "INSERT INTO tiktok.archive_blobs (sha256, path, bytes, content_type, stored_at)"
                " VALUES (:s, :p, 3, 'image/jpeg', :now) ON CONFLICT DO NOTHING"
            ),
            {"s": sha, "p": f"file:///covers/{sha[:2]}/{sha}.jpg", "now": NOW},
        )
        conn.execute(
            text(
                "INSERT INTO tiktok.cover_archive (kind, subject_id, sha256, open_id, path, bytes, content_type,"
                " archived_at, checked_at) VALUES (:k, :o, :s, :o, :p, 3, 'image/jpeg', :now, :now)"
            ),
            {"k": kind, "o": open_id, "s": sha, "p": f"file:///covers/{sha[:2]}/{sha}.jpg", "now": NOW},
        )
    return sha


def test_a_purged_accounts_cover_is_not_served_but_a_shared_one_still_is(clean_warehouse: Any) -> None:
    from tiktok_accounts.service import archived_blob
    from tiktok_warehouse.accounts_admin import AccountsAdmin

    own = _account_with_cover(clean_warehouse, "acct-purged", b"\xff\xd8\xffown")
    shared = _account_with_cover(clean_warehouse, "acct-purged", b"\xff\xd8\xffshared", kind="cover")
    _account_with_cover(clean_warehouse, "acct-kept", b"\xff\xd8\xffshared")  # same image, another account
    assert archived_blob(clean_warehouse, own) is not None

    AccountsAdmin(clean_warehouse).purge("acct-purged")
    # Purge means gone: the page must not keep serving the creator's images to whoever kept a link.
    assert archived_blob(clean_warehouse, own) is None
    assert archived_blob(clean_warehouse, shared) is not None  # still an image of an account we keep


def test_only_raster_types_are_ever_served(clean_warehouse: Any) -> None:
    """The archive stores only sniffed JPEG/PNG/WebP/GIF/HEIC; a row saying SVG or HTML (written by
    hand, an older version, a restore) must not turn the page's origin into a script host."""
    from tiktok_accounts.service import RASTER_TYPES, archived_blob
    from tiktok_pipeline.archive import EXTENSIONS

    assert set(EXTENSIONS) == RASTER_TYPES  # what the archive stores is what the page serves
    sha = _account_with_cover(clean_warehouse, "acct-svg", b"<svg onload=alert(1)>")
    with clean_warehouse.begin() as conn:
        conn.execute(
            text("UPDATE tiktok.archive_blobs SET content_type = 'image/svg+xml' WHERE sha256 = :s"), {"s": sha}
        )
    assert archived_blob(clean_warehouse, sha) is None
    png = _account_with_cover(clean_warehouse, "acct-svg", b"\x89PNG\r\n\x1a\nok")
    with clean_warehouse.begin() as conn:
        conn.execute(text("UPDATE tiktok.archive_blobs SET content_type = 'image/png' WHERE sha256 = :s"), {"s": png})
    assert archived_blob(clean_warehouse, png) == (f"file:///covers/{png[:2]}/{png}.jpg", "image/png")
