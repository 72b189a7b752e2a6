"""Migration 0003 adds the refresh lease to accounts that already hold tokens, and takes it away again."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import create_engine, text

from tiktok_warehouse import migrate
from tiktok_warehouse.tokens import TokenGrant, TokenStore


def columns(engine, table: str) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                text(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = 'tiktok' AND table_name = :t"
                ),
                {"t": table},
            ).scalars()
        )


def test_upgrade_keeps_connected_accounts_and_downgrade_drops_only_the_lease(
    scratch_db: str, fernet_key: str, make_grant: Callable[..., TokenGrant]
) -> None:
    engine = create_engine(scratch_db)
    try:
        migrate.upgrade(engine, "0001")
        granted = make_grant("open-before-0003")
        with engine.begin() as conn:  # an account stored by the previous release
            conn.execute(
                text(
                    "INSERT INTO tiktok.accounts (open_id, connected_at, updated_at, access_token_enc,"
                    " refresh_token_enc, access_expires_at, refresh_expires_at)"
                    " VALUES ('open-before-0003', now(), now(), 'a', 'r', now(), now())"
                )
            )
        migrate.upgrade(engine, "head")  # 0003 and whatever the release adds after it
        assert {"refresh_lease_owner", "refresh_lease_until"} <= columns(engine, "accounts")
        store = TokenStore(engine, fernet_key)
        store.save_grant(granted)  # the new release works on the migrated row
        assert store.get("open-before-0003").refresh_token == granted.refresh_token
        migrate.downgrade(engine, "0001")
        assert not {"refresh_lease_owner", "refresh_lease_until"} & columns(engine, "accounts")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM tiktok.accounts")).scalar() == 1
    finally:
        engine.dispose()
