"""Account administration on the real warehouse: health, disconnect, purge, retention, consent, OAuth states."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import Engine

from tiktok_pipeline.removals import POLICY
from tiktok_warehouse.accounts_admin import (
    AccountNotDisconnected,
    AccountsAdmin,
    daily_account_check,
    days_left,
    parse_retention_days,
    parse_warning_days,
    warning_threshold,
)
from tiktok_warehouse.loads import Warehouse
from tiktok_warehouse.oauth_states import PendingAuthorizations, StateRejected, digest
from tiktok_warehouse.tables import accounts, oauth_states, sync_state, videos
from tiktok_warehouse.tokens import TokenDecryptionError, TokenEncryptionKeyMissing, TokenGrant, TokenStore

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
KEY = Fernet.generate_key().decode()


@pytest.fixture
def engine(clean_warehouse: Engine) -> Engine:
    with clean_warehouse.begin() as conn:
        conn.execute(text("TRUNCATE tiktok.oauth_states"))
    return clean_warehouse


@pytest.fixture
def add_account(engine: Engine) -> Callable[..., str]:
    store = TokenStore(engine, KEY)

    def add(
        open_id: str, *, name: str | None = None, refresh_days: float | None = 365, obtained: datetime = NOW
    ) -> str:
        """``refresh_days=None``: TikTok's answer left the lifetime out, so the store estimates it."""
        grant = TokenGrant(
            open_id=open_id,
            access_token=f"act.{open_id}-access-token",
            expires_in=7200,
            refresh_token=f"rft.{open_id}-refresh-token",
            refresh_expires_in=None if refresh_days is None else int(refresh_days * 86400),
            scopes=frozenset({"user.info.basic", "video.list"}),
            obtained_at=obtained,
        )
        store.save_grant(grant, display_name=name)
        return open_id

    return add


def add_video(engine: Engine, open_id: str, video_id: str, *, cover_expires_at: Any, removed: bool = False) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(videos).values(
                id=video_id,
                open_id=open_id,
                cover_expires_at=cover_expires_at,
                first_seen_at=NOW,
                last_seen_at=NOW,
                removed_at=NOW if removed else None,
            )
        )


def test_health_counts_what_on_call_needs(engine: Engine, add_account: Callable[..., str]) -> None:
    add_account("alice", name="Alice")
    add_account("bob", name="Bob")
    AccountsAdmin(engine).mark_disconnected("bob", "test", now=NOW)
    wh = Warehouse(engine, removals=POLICY)
    wh.upsert_profile_snapshot("alice", {"follower_count": 10}, captured_at=NOW - timedelta(days=2))
    wh.upsert_profile_snapshot("alice", {"follower_count": 15}, captured_at=NOW - timedelta(days=1))
    add_video(engine, "alice", "1", cover_expires_at=NOW + timedelta(hours=3))  # fresh
    add_video(engine, "alice", "2", cover_expires_at=NOW - timedelta(minutes=1))  # stale
    add_video(engine, "alice", "3", cover_expires_at=None)  # unknown: stale
    add_video(engine, "alice", "4", cover_expires_at=None, removed=True)  # gone: neither stored nor stale
    with engine.begin() as conn:
        conn.execute(
            insert(sync_state).values(open_id="alice", mode="full", started_at=NOW, updated_at=NOW, finished_at=NOW)
        )
        conn.execute(insert(sync_state).values(open_id="alice", mode="full", started_at=NOW, updated_at=NOW))

    health = {h.open_id: h for h in AccountsAdmin(engine).health(now=NOW)}
    alice = health["alice"]
    assert (alice.videos_stored, alice.covers_stale, alice.followers) == (3, 2, 15)
    assert alice.last_snapshot_at == NOW - timedelta(days=1)
    assert alice.last_video_sync_at == NOW
    assert health["bob"].status == "disconnected" and health["bob"].last_video_sync_at is None
    # Those needing a person first; disconnected last.
    assert [h.open_id for h in AccountsAdmin(engine).health(now=NOW)] == ["alice", "bob"]
    series = AccountsAdmin(engine).follower_series("alice", days=30, now=NOW)
    assert [p.followers for p in series] == [10, 15]
    assert AccountsAdmin(engine).follower_series("alice", days=1, now=NOW)[0].followers == 15


def test_disconnect_is_idempotent_and_deaf_to_deauthorizations_older_than_the_grant(
    engine: Engine, add_account: Callable[..., str]
) -> None:
    admin = AccountsAdmin(engine)
    add_account("carol")
    authorized = NOW + timedelta(microseconds=654321)
    admin.mark_authorized("carol", now=authorized)
    assert admin.mark_disconnected("carol", "old event", now=NOW, event_time=NOW - timedelta(seconds=1)) == "stale"
    assert admin.status("carol") == "active"
    # TikTok's create_time is whole seconds: the authorization's own second is not "older".
    assert admin.mark_disconnected("carol", "webhook", now=NOW, event_time=NOW) == "disconnected"
    first = admin.health(now=NOW, open_ids=["carol"])[0]
    later = NOW + timedelta(hours=5)
    assert admin.mark_disconnected("carol", "again", now=later, event_time=later) == "already"
    again = admin.health(now=NOW, open_ids=["carol"])[0]
    assert again.disconnected_at == first.disconnected_at == NOW  # the retention clock did not restart
    assert again.status_reason == "webhook"
    assert admin.mark_disconnected("nobody", "x", now=NOW) == "unknown"
    # Reconnecting clears the disconnect time.
    TokenStore(engine, KEY).save_grant(
        TokenGrant("carol", "act.carol-new-access", 7200, "rft.carol-new-refresh", 86400, frozenset(), NOW)
    )
    admin.mark_authorized("carol", now=later)
    assert admin.health(now=NOW, open_ids=["carol"])[0].disconnected_at is None


def test_purge_deletes_every_row_of_a_disconnected_account_only(
    engine: Engine, add_account: Callable[..., str]
) -> None:
    admin = AccountsAdmin(engine)
    add_account("dave")
    add_account("erin")
    Warehouse(engine, removals=POLICY).upsert_profile_snapshot("dave", {"follower_count": 1}, captured_at=NOW)
    add_video(engine, "dave", "11", cover_expires_at=None)
    add_video(engine, "erin", "12", cover_expires_at=None)
    with pytest.raises(AccountNotDisconnected, match="Disconnect it first"):
        admin.purge("dave")
    with pytest.raises(AccountNotDisconnected, match="does not exist"):
        admin.purge("nobody")
    admin.mark_disconnected("dave", "test", now=NOW)
    result = admin.purge("dave")
    assert (result.videos, result.profile_snapshots) == (1, 1)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(videos)).scalar() == 1  # erin's
        assert conn.execute(select(accounts.c.open_id)).scalars().all() == ["erin"]


def test_retention_purges_only_accounts_disconnected_long_enough(
    engine: Engine, add_account: Callable[..., str]
) -> None:
    admin = AccountsAdmin(engine)
    for open_id, ago in (("old", 31), ("recent", 5)):
        add_account(open_id)
        admin.mark_disconnected(open_id, "test", now=NOW - timedelta(days=ago))
    add_account("live")
    assert admin.apply_retention(None, now=NOW) == []
    assert admin.apply_retention(30, now=NOW) == ["old"]
    assert admin.apply_retention(0, now=NOW) == ["recent"]
    assert admin.status("live") == "active"


def test_daily_check_expires_lapsed_consent_and_warns_at_30_7_1_days(
    engine: Engine, add_account: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    add_account("lapsed", refresh_days=0.5, obtained=NOW - timedelta(days=1))
    add_account("in25", name="Twenty-five", refresh_days=25)
    add_account("in5", refresh_days=5)
    add_account("in1", refresh_days=0.5)
    add_account("in200", refresh_days=200)
    with caplog.at_level(logging.WARNING):
        summary = daily_account_check(engine, now=NOW, accounts_url="http://airflow/tiktok-accounts/")
    assert summary["expired"] == ["lapsed"]
    assert summary["warnings"] == {"in1": 1, "in5": 7, "in25": 30}
    assert AccountsAdmin(engine).status("lapsed") == "reauth_required"
    with engine.connect() as conn:
        reason = conn.execute(select(accounts.c.status_reason).where(accounts.c.open_id == "lapsed")).scalar()
    assert "ran out at" in reason and "reconnect" in reason
    text_logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "in25 (Twenty-five)" in text_logged and "runs out in 25 day(s)" in text_logged
    assert "http://airflow/tiktok-accounts/" in text_logged
    assert "in200" not in text_logged
    assert "rft." not in text_logged  # never a token
    # A second run changes nothing more.
    assert daily_account_check(engine, now=NOW)["expired"] == []


def test_an_estimated_expiry_warns_but_never_condemns_the_account(
    engine: Engine, add_account: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    add_account("guessed_out", obtained=NOW - timedelta(days=181), refresh_days=None)  # estimate passed
    add_account("guessed_soon", obtained=NOW - timedelta(days=175), refresh_days=None)  # 5 days left, estimated
    add_account("stated_out", refresh_days=0.5, obtained=NOW - timedelta(days=1))
    with caplog.at_level(logging.INFO):
        summary = daily_account_check(engine, now=NOW)
    admin = AccountsAdmin(engine)
    assert summary["expired"] == ["stated_out"]
    assert admin.status("guessed_out") == admin.status("guessed_soon") == "active"
    assert admin.lapsed_estimates(now=NOW) == ["guessed_out"]
    [warning] = admin.consent_warnings(now=NOW)
    assert (warning.open_id, warning.threshold, warning.estimated) == ("guessed_soon", 7, True)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "guessed_out: the estimated expiry of its refresh token has passed" in logged
    assert "estimated: TikTok did not state it" in logged
    by_id = {h.open_id: h for h in admin.health(now=NOW)}
    assert by_id["guessed_out"].refresh_expiry_estimated and not by_id["stated_out"].refresh_expiry_estimated
    # TikTok stating the lifetime on the next grant makes it a known expiry again.
    add_account("guessed_out", refresh_days=0.5, obtained=NOW - timedelta(days=1))
    assert daily_account_check(engine, now=NOW)["expired"] == ["guessed_out"]


@pytest.mark.parametrize(
    ("left", "expected"), [(timedelta(days=40), None), (timedelta(days=30), 30), (timedelta(hours=30), 7)]
)
def test_warning_threshold(left: timedelta, expected: int | None) -> None:
    assert warning_threshold(NOW + left, NOW, (30, 7, 1)) == expected


def test_days_and_config_parsing() -> None:
    assert days_left(NOW - timedelta(seconds=1), NOW) == 0
    assert days_left(NOW + timedelta(hours=1), NOW) == 1
    assert parse_warning_days("1, 30,7") == (30, 7, 1)
    assert parse_warning_days("") == (30, 7, 1)
    assert parse_retention_days("keep") is None and parse_retention_days("") is None
    assert parse_retention_days("0") == 0
    for bad in ("x", "-1"):
        with pytest.raises(ValueError):
            parse_retention_days(bad)
    with pytest.raises(ValueError):
        parse_warning_days("0")


# -- OAuth states ---------------------------------------------------------------------------------


def start(pending: PendingAuthorizations, state: str = "state-1", binding: str = "cookie-1", **kw: Any) -> None:
    pending.start(
        state=state,
        binding=binding,
        user_id=kw.pop("user_id", "admin"),
        code_verifier=kw.pop("code_verifier", "verifier-" + state),
        redirect_uri="http://airflow/tiktok-accounts/callback",
        scopes=["user.info.basic"],
        expected_open_id=kw.pop("expected_open_id", None),
        now=kw.pop("now", NOW),
    )


def test_state_is_stored_hashed_and_finishes_once(engine: Engine) -> None:
    pending = PendingAuthorizations(engine, KEY)
    start(pending, expected_open_id="alice")
    with engine.connect() as conn:
        row = conn.execute(select(oauth_states)).one()
    assert row.state_hash == digest("state-1") and row.session_hash == digest("cookie-1")
    assert b"verifier-state-1" not in bytes(row.code_verifier_enc)
    done = pending.finish(state="state-1", binding="cookie-1", user_id="admin", now=NOW + timedelta(minutes=1))
    assert (done.code_verifier, done.expected_open_id) == ("verifier-state-1", "alice")
    with pytest.raises(StateRejected) as replay:
        pending.finish(state="state-1", binding="cookie-1", user_id="admin", now=NOW + timedelta(minutes=2))
    assert replay.value.reason == "used"


@pytest.mark.parametrize(
    ("state", "binding", "user", "reason"),
    [
        (None, "cookie-1", "admin", "missing"),
        ("state-1x", "cookie-1", "admin", "unknown"),
        ("state-1", "cookie-2", "admin", "other_session"),
        ("state-1", None, "admin", "other_session"),
        ("state-1", "cookie-1", "mallory", "other_session"),
    ],
)
def test_a_state_that_does_not_match_is_rejected_and_not_used_up(
    engine: Engine, state: str | None, binding: str | None, user: str, reason: str
) -> None:
    pending = PendingAuthorizations(engine, KEY)
    start(pending)
    with pytest.raises(StateRejected) as rejected:
        pending.finish(state=state, binding=binding, user_id=user, now=NOW)
    assert rejected.value.reason == reason
    # The rightful browser can still finish it.
    assert pending.finish(state="state-1", binding="cookie-1", user_id="admin", now=NOW).code_verifier


def test_an_expired_state_is_rejected_and_used_up(engine: Engine) -> None:
    pending = PendingAuthorizations(engine, KEY)
    start(pending)
    late = NOW + timedelta(minutes=16)
    with pytest.raises(StateRejected) as rejected:
        pending.finish(state="state-1", binding="cookie-1", user_id="admin", now=late)
    assert rejected.value.reason == "expired"
    with pytest.raises(StateRejected) as again:
        pending.finish(state="state-1", binding="cookie-1", user_id="admin", now=late)
    assert again.value.reason == "used"


def test_the_key_is_checked_before_anything_is_exchanged(engine: Engine) -> None:
    with pytest.raises(TokenEncryptionKeyMissing):
        start(PendingAuthorizations(engine, None))
    start(PendingAuthorizations(engine, KEY))
    other = PendingAuthorizations(engine, Fernet.generate_key().decode())
    with pytest.raises(TokenDecryptionError, match="another token encryption key"):
        other.finish(state="state-1", binding="cookie-1", user_id="admin", now=NOW)
    # A rotated key list that still holds the old key works.
    start(PendingAuthorizations(engine, KEY), state="state-2")
    rotated = PendingAuthorizations(engine, f"{Fernet.generate_key().decode()},{KEY}")
    assert rotated.finish(state="state-2", binding="cookie-1", user_id="admin", now=NOW).code_verifier


def test_long_expired_states_are_forgotten(engine: Engine) -> None:
    pending = PendingAuthorizations(engine, KEY)
    start(pending, state="ancient", now=NOW - timedelta(days=3))
    start(pending, state="fresh")
    with engine.connect() as conn:
        assert conn.execute(select(oauth_states.c.state_hash)).scalars().all() == [digest("fresh")]


def test_store_is_writable_says_no_for_a_read_only_role(engine: Engine) -> None:
    assert AccountsAdmin(engine).store_is_writable() is True
    role = "tiktok_accounts_reader"
    with engine.begin() as conn:
        if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():  # a crashed run
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA tiktok TO {role}"))
        conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA tiktok TO {role}"))
    reader = create_engine(engine.url.set(username=role, password=None))
    try:
        assert AccountsAdmin(reader).store_is_writable() is False
    finally:
        reader.dispose()
        with engine.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
