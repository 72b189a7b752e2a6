"""
Account administration beside the token store: health, disconnect, purge, retention and consent.

The token store (:mod:`tiktok_warehouse.tokens`) owns the tokens; this module owns what the
accounts UI and the daily maintenance do to the rest of an account's life:

- :meth:`AccountsAdmin.health` -- one row per account with what on-call needs at a glance
  (status, token expiries, last snapshot, last successful video sync, videos stored, stale covers).
- :meth:`AccountsAdmin.mark_disconnected` -- idempotent, and deaf to a deauthorization older than
  the account's current authorization (TikTok redelivers webhooks for up to 72 hours).
- :meth:`AccountsAdmin.purge` -- deletes a *disconnected* account and, by cascade, every row of it.
- :func:`daily_account_check` -- what a daily task runs: marks accounts whose refresh token has
  run out ``reauth_required`` (before any task tries to use them), logs a warning for those that
  run out within 30/7/1 days, and purges disconnected accounts past their retention.

Statuses are text: ``active``, ``reauth_required``, ``disabled``, ``disconnected``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, func, literal, or_, select, update

from tiktok_provider.errors import printable
from tiktok_warehouse.tables import accounts, profile_snapshots, sync_state, video_snapshots, videos

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

#: Warn this many days before a refresh token (the creator's consent) runs out.
DEFAULT_WARNING_DAYS: tuple[int, ...] = (30, 7, 1)
#: Airflow config section of the accounts UI and the daily check.
CONFIG_SECTION = "tiktok_accounts"
#: Order of the accounts page: what needs a person first.
STATUS_ORDER = {"reauth_required": 0, "active": 1, "disabled": 2, "disconnected": 3}
#: The reasons of TikTok's ``authorization.removed`` webhook.
REMOVAL_REASONS = {
    0: "unknown reason",
    1: "the user disconnected the app in TikTok",
    2: "the user's TikTok account was deleted",
    3: "the user's age changed",
    4: "the user's TikTok account was banned",
    5: "the developer revoked the authorization",
}


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (got naive {value.isoformat()})")
    return value.astimezone(UTC)


def parse_warning_days(value: str | Sequence[int] | None) -> tuple[int, ...]:
    """Read warning thresholds such as ``"30,7,1"``; largest first. Empty means the defaults."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_WARNING_DAYS
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        days = sorted({int(str(item).strip()) for item in items if str(item).strip()}, reverse=True)
    except ValueError:
        raise ValueError(f"consent warning days must be whole numbers like 30,7,1, got {value!r}") from None
    if not days or days[-1] < 1:
        raise ValueError(f"consent warning days must be positive, got {value!r}")
    return tuple(days)


def parse_retention_days(value: str | int | None) -> int | None:
    """Read the retention of disconnected accounts: empty or ``keep`` keeps them; N purges after N days."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "keep")):
        return None
    try:
        days = int(str(value).strip())
    except ValueError:
        raise ValueError(f"retention must be 'keep' or a number of days, got {value!r}") from None
    if days < 0:
        raise ValueError(f"retention days cannot be negative, got {days}")
    return days


def days_left(expires_at: datetime, now: datetime) -> int:
    """Whole days until ``expires_at``, rounded up (0 once it has passed)."""
    left = _utc(expires_at, "expires_at") - _utc(now, "now")
    return max(0, math.ceil(left / timedelta(days=1)))


def warning_threshold(expires_at: datetime, now: datetime, thresholds: Sequence[int]) -> int | None:
    """The smallest threshold the expiry is within (e.g. 7 for 5 days left of 30/7/1), or None."""
    left = days_left(expires_at, now)
    within = [t for t in thresholds if left <= t]
    return min(within) if within else None


@dataclass(frozen=True)
class AccountHealth:
    """One account as the accounts page shows it; never its tokens."""

    open_id: str
    display_name: str | None
    username: str | None
    avatar_url: str | None
    status: str
    status_reason: str | None
    scopes: frozenset[str]
    connected_at: datetime
    authorized_at: datetime | None
    disconnected_at: datetime | None
    access_expires_at: datetime
    refresh_expires_at: datetime
    last_snapshot_at: datetime | None
    followers: int | None
    last_video_sync_at: datetime | None
    videos_stored: int
    covers_stale: int
    #: TikTok did not state the refresh token's lifetime: ``refresh_expires_at`` is an estimate.
    refresh_expiry_estimated: bool = False

    @property
    def name(self) -> str:
        return self.display_name or self.username or self.open_id


@dataclass(frozen=True)
class FollowerPoint:
    day: date
    followers: int


@dataclass(frozen=True)
class ConsentWarning:
    """An active account whose refresh token runs out soon."""

    open_id: str
    name: str
    refresh_expires_at: datetime
    days_left: int
    threshold: int
    #: The expiry is our estimate (TikTok did not state it): the consent may well last longer.
    estimated: bool = False


@dataclass(frozen=True)
class PurgeResult:
    """What a purge deleted."""

    open_id: str
    videos: int
    video_snapshots: int
    profile_snapshots: int
    syncs: int


class AccountNotDisconnected(RuntimeError):
    """Purge refused: only a disconnected account (its authorization withdrawn) may be purged."""

    def __init__(self, open_id: str, status: str | None) -> None:
        self.open_id = open_id
        self.status = status
        what = "does not exist" if status is None else f"has status {status!r}"
        super().__init__(
            f"TikTok account {open_id!r} {what}; only a disconnected account can be purged. "
            "Disconnect it first (that revokes its token at TikTok), then purge it."
        )


class AccountsAdmin:
    """Account health and lifecycle operations on the warehouse (the token store's tables)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __repr__(self) -> str:
        return f"{type(self).__name__}(engine={self.engine!r})"

    # -- reading ----------------------------------------------------------------------------

    def health(self, *, now: datetime, open_ids: Sequence[str] | None = None) -> list[AccountHealth]:
        """Return every account (or those named), the ones that need a person first."""
        now = _utc(now, "now")
        a = accounts
        live = and_(videos.c.open_id == a.c.open_id, videos.c.removed_at.is_(None))
        query = select(
            a.c.open_id,
            a.c.display_name,
            a.c.username,
            a.c.avatar_url,
            a.c.status,
            a.c.status_reason,
            a.c.scopes,
            a.c.connected_at,
            a.c.authorized_at,
            a.c.disconnected_at,
            a.c.access_expires_at,
            a.c.refresh_expires_at,
            a.c.refresh_expiry_estimated,
            select(func.max(profile_snapshots.c.captured_at))
            .where(profile_snapshots.c.open_id == a.c.open_id)
            .scalar_subquery()
            .label("last_snapshot_at"),
            select(profile_snapshots.c.follower_count)
            .where(profile_snapshots.c.open_id == a.c.open_id, profile_snapshots.c.follower_count.is_not(None))
            .order_by(profile_snapshots.c.snapshot_date.desc())
            .limit(1)
            .scalar_subquery()
            .label("followers"),
            select(func.max(sync_state.c.finished_at))
            .where(sync_state.c.open_id == a.c.open_id)
            .scalar_subquery()
            .label("last_video_sync_at"),
            select(func.count()).select_from(videos).where(live).scalar_subquery().label("videos_stored"),
            select(func.count())
            .select_from(videos)
            .where(live, or_(videos.c.cover_expires_at.is_(None), videos.c.cover_expires_at <= literal(now)))
            .scalar_subquery()
            .label("covers_stale"),
        )
        if open_ids is not None:
            query = query.where(a.c.open_id.in_(list(open_ids)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        found = [
            AccountHealth(
                open_id=row.open_id,
                display_name=row.display_name,
                username=row.username,
                avatar_url=row.avatar_url,
                status=row.status,
                status_reason=row.status_reason,
                scopes=frozenset(row.scopes or ()),
                connected_at=row.connected_at.astimezone(UTC),
                authorized_at=row.authorized_at.astimezone(UTC) if row.authorized_at else None,
                disconnected_at=row.disconnected_at.astimezone(UTC) if row.disconnected_at else None,
                access_expires_at=row.access_expires_at.astimezone(UTC),
                refresh_expires_at=row.refresh_expires_at.astimezone(UTC),
                last_snapshot_at=row.last_snapshot_at.astimezone(UTC) if row.last_snapshot_at else None,
                followers=row.followers,
                last_video_sync_at=row.last_video_sync_at.astimezone(UTC) if row.last_video_sync_at else None,
                videos_stored=row.videos_stored,
                refresh_expiry_estimated=row.refresh_expiry_estimated,
                covers_stale=row.covers_stale,
            )
            for row in rows
        ]
        return sorted(found, key=lambda h: (STATUS_ORDER.get(h.status, 9), h.name.casefold(), h.open_id))

    def follower_series(self, open_id: str, *, days: int, now: datetime) -> list[FollowerPoint]:
        """Return the account's follower counts of the last ``days`` days, oldest first."""
        since = _utc(now, "now").date() - timedelta(days=days)
        query = (
            select(profile_snapshots.c.snapshot_date, profile_snapshots.c.follower_count)
            .where(
                profile_snapshots.c.open_id == open_id,
                profile_snapshots.c.snapshot_date >= since,
                profile_snapshots.c.follower_count.is_not(None),
            )
            .order_by(profile_snapshots.c.snapshot_date)
        )
        with self.engine.connect() as conn:
            return [FollowerPoint(row.snapshot_date, row.follower_count) for row in conn.execute(query)]

    def status(self, open_id: str) -> str | None:
        """Return the account's status, or None if there is no such account."""
        with self.engine.connect() as conn:
            return conn.execute(select(accounts.c.status).where(accounts.c.open_id == open_id)).scalar()

    def store_is_writable(self) -> bool:
        """Whether the warehouse role may insert and update accounts (checked before spending a code)."""
        return self.write_blocker() is None

    def write_blocker(self) -> str | None:
        """Why the accounts UI could not write to the warehouse now, or None if it can.

        Checked before anything irreversible (spending a code, revoking at TikTok): the role's
        privileges on ``tiktok.accounts``, and whether sessions are read-only (a hot standby,
        ``default_transaction_read_only``, a database put read-only because its disk is full).
        """
        table = f"{accounts.schema}.{accounts.name}"
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    (func.has_table_privilege(table, "INSERT") & func.has_table_privilege(table, "UPDATE")).label(
                        "granted"
                    ),
                    func.current_setting("transaction_read_only").label("read_only"),
                )
            ).one()
        if row.read_only == "on":
            return (
                "The warehouse is read-only (transaction_read_only is on: a standby, or a database set "
                "read-only, e.g. because its disk is full)."
            )
        if not row.granted:
            return "The tiktok_warehouse connection's role may not insert or update tiktok.accounts."
        return None

    # -- lifecycle --------------------------------------------------------------------------

    def mark_authorized(self, open_id: str, *, now: datetime) -> None:
        """Record that the account was just (re)authorized through the accounts UI."""
        with self.engine.begin() as conn:
            conn.execute(
                update(accounts)
                .where(accounts.c.open_id == open_id)
                .values(authorized_at=_utc(now, "now"), disconnected_at=None)
            )

    def mark_disconnected(self, open_id: str, reason: str, *, now: datetime, event_time: datetime | None = None) -> str:
        """
        Mark the account disconnected; return what happened.

        :param event_time: when TikTok says the authorization was removed; an event older than the
            account's current authorization (a redelivered webhook after a reconnect) changes nothing.
        :return: ``"disconnected"``, ``"already"`` (it was), ``"stale"`` (older than the current
            authorization) or ``"unknown"`` (no such account).
        """
        now = _utc(now, "now")
        conditions = [accounts.c.open_id == open_id, accounts.c.status != "disconnected"]
        if event_time is not None:
            # TikTok's create_time has whole seconds: an event in the second of the authorization counts.
            authorized = func.date_trunc("second", func.coalesce(accounts.c.authorized_at, accounts.c.connected_at))
            conditions.append(authorized <= _utc(event_time, "event_time"))
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(accounts)
                .where(*conditions)
                .values(status="disconnected", status_reason=reason[:1000], disconnected_at=now, updated_at=now)
                .returning(accounts.c.open_id)
            ).first()
            if changed is not None:
                log.info("TikTok account %s is now disconnected: %s", open_id, reason)
                return "disconnected"
            status = conn.execute(select(accounts.c.status).where(accounts.c.open_id == open_id)).scalar()
        if status is None:
            return "unknown"
        return "already" if status == "disconnected" else "stale"

    def purge(self, open_id: str) -> PurgeResult:
        """Delete a disconnected account and every row of it (snapshots, videos, syncs)."""
        with self.engine.begin() as conn:
            status = conn.execute(
                select(accounts.c.status).where(accounts.c.open_id == open_id).with_for_update()
            ).scalar()
            if status != "disconnected":
                raise AccountNotDisconnected(open_id, status)

            def count(table: Any, *where: Any) -> int:
                return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar() or 0)

            result = PurgeResult(
                open_id=open_id,
                videos=count(videos, videos.c.open_id == open_id),
                video_snapshots=count(
                    video_snapshots.join(videos, videos.c.id == video_snapshots.c.video_id), videos.c.open_id == open_id
                ),
                profile_snapshots=count(profile_snapshots, profile_snapshots.c.open_id == open_id),
                syncs=count(sync_state, sync_state.c.open_id == open_id),
            )
            conn.execute(delete(accounts).where(accounts.c.open_id == open_id))
        log.info(
            "Purged TikTok account %s: %d videos, %d video snapshots, %d profile snapshots, %d syncs",
            open_id,
            result.videos,
            result.video_snapshots,
            result.profile_snapshots,
            result.syncs,
        )
        return result

    def apply_retention(self, retention_days: int | None, *, now: datetime) -> list[str]:
        """Purge accounts disconnected at least ``retention_days`` ago (None keeps them); return their ids."""
        if retention_days is None:
            return []
        cutoff = _utc(now, "now") - timedelta(days=retention_days)
        with self.engine.begin() as conn:
            purged = list(
                conn.execute(
                    delete(accounts)
                    .where(accounts.c.status == "disconnected", accounts.c.disconnected_at <= cutoff)
                    .returning(accounts.c.open_id)
                ).scalars()
            )
        for open_id in purged:
            log.info("Purged TikTok account %s: disconnected more than %d days ago", open_id, retention_days)
        return sorted(purged)

    # -- consent ----------------------------------------------------------------------------

    def expire_lapsed_consents(self, *, now: datetime) -> list[str]:
        """
        Mark active accounts whose refresh token has run out ``reauth_required``; return their ids.

        Only an expiry TikTok stated condemns an account. One we estimated (TikTok's answer did not
        say) is left active: the next refresh asks TikTok, and its refusal is what marks the account
        (see :meth:`lapsed_estimates`).
        """
        now = _utc(now, "now")
        reason = func.concat(
            "refresh token (the creator's consent) ran out at ",
            func.to_char(accounts.c.refresh_expires_at.op("AT TIME ZONE")("UTC"), "YYYY-MM-DD HH24:MI"),
            " UTC; the creator must reconnect the account",
        )
        with self.engine.begin() as conn:
            expired = list(
                conn.execute(
                    update(accounts)
                    .where(
                        accounts.c.status == "active",
                        accounts.c.refresh_expires_at <= now,
                        accounts.c.refresh_expiry_estimated.is_(False),
                    )
                    .values(status="reauth_required", status_reason=reason, updated_at=now)
                    .returning(accounts.c.open_id)
                ).scalars()
            )
        return sorted(expired)

    def lapsed_estimates(self, *, now: datetime) -> list[str]:
        """Return the active accounts whose *estimated* refresh expiry has passed (they stay active)."""
        now = _utc(now, "now")
        query = (
            select(accounts.c.open_id)
            .where(
                accounts.c.status == "active",
                accounts.c.refresh_expires_at <= now,
                accounts.c.refresh_expiry_estimated.is_(True),
            )
            .order_by(accounts.c.open_id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def consent_warnings(
        self, *, now: datetime, thresholds: Sequence[int] = DEFAULT_WARNING_DAYS
    ) -> list[ConsentWarning]:
        """Return the active accounts whose refresh token runs out within the largest threshold."""
        now = _utc(now, "now")
        horizon = now + timedelta(days=max(thresholds))
        query = (
            select(
                accounts.c.open_id,
                accounts.c.display_name,
                accounts.c.username,
                accounts.c.refresh_expires_at,
                accounts.c.refresh_expiry_estimated,
            )
            .where(
                accounts.c.status == "active",
                accounts.c.refresh_expires_at > now,
                accounts.c.refresh_expires_at <= horizon,
            )
            .order_by(accounts.c.refresh_expires_at, accounts.c.open_id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        warnings = []
        for row in rows:
            expires = row.refresh_expires_at.astimezone(UTC)
            threshold = warning_threshold(expires, now, thresholds)
            if threshold is not None:
                warnings.append(
                    ConsentWarning(
                        open_id=row.open_id,
                        name=row.display_name or row.username or row.open_id,
                        refresh_expires_at=expires,
                        days_left=days_left(expires, now),
                        threshold=threshold,
                        estimated=row.refresh_expiry_estimated,
                    )
                )
        return warnings


def daily_account_check(
    engine: Engine,
    *,
    now: datetime,
    warning_days: Sequence[int] = DEFAULT_WARNING_DAYS,
    retention_days: int | None = None,
    accounts_url: str | None = None,
    log: logging.Logger | Any = log,
) -> dict[str, Any]:
    """
    The daily account maintenance; return a JSON-able summary.

    1. Accounts whose refresh token has run out become ``reauth_required`` (so no task tries them).
    2. A warning is logged for each active account whose refresh token runs out within
       ``warning_days`` (default 30/7/1), naming the threshold it crossed.
    3. Disconnected accounts older than ``retention_days`` are purged (None keeps them).

    :param accounts_url: where the accounts page is, for the warnings' "what to do next".
    """
    admin = AccountsAdmin(engine)
    where = f" at {accounts_url}" if accounts_url else " (TikTok accounts, in the Airflow UI)"
    expired = admin.expire_lapsed_consents(now=now)
    for open_id in expired:
        log.warning(
            "TikTok account %s: its refresh token has run out, so it is now reauth_required and skipped by "
            "every DAG. Ask the creator to reconnect it%s.",
            open_id,
            where,
        )
    for open_id in admin.lapsed_estimates(now=now):
        log.info(
            "TikTok account %s: the estimated expiry of its refresh token has passed (TikTok did not state "
            "it), so it stays active: its next refresh asks TikTok, and only a refusal marks it reauth_required.",
            open_id,
        )
    warnings = admin.consent_warnings(now=now, thresholds=warning_days)
    for warning in warnings:
        log.warning(
            "TikTok account %s (%s): the creator's consent (refresh token) runs out in %d day(s), on %s UTC "
            "(%d-day warning%s). Ask the creator to reconnect it%s before then.",
            warning.open_id,
            printable(warning.name) or warning.open_id,  # what a creator typed: one printable line
            warning.days_left,
            f"{warning.refresh_expires_at:%Y-%m-%d %H:%M}",
            warning.threshold,
            "; estimated: TikTok did not state it" if warning.estimated else "",
            where,
        )
    purged = admin.apply_retention(retention_days, now=now)
    return {
        "expired": expired,
        "warnings": {w.open_id: w.threshold for w in warnings},
        "purged": purged,
    }
