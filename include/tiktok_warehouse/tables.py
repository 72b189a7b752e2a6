"""The warehouse schema: the single SQLAlchemy Core definition of every table in schema ``tiktok``.

Migrations in ``tiktok_warehouse/migrations`` must create exactly this (a test compares them).
Views are defined as SQL in the migration and documented here in ``VIEW_NAMES``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

SCHEMA = "tiktok"

#: "disconnected": the creator's authorization was withdrawn (revoked by us, or TikTok's authorization.removed).
ACCOUNT_STATUSES = ("active", "reauth_required", "disabled", "disconnected")
SYNC_MODES = ("full", "incremental")
VIEW_NAMES = ("account_daily_growth", "video_latest_stats")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)


def _ts(name: str, *, nullable: bool = True) -> Column:
    return Column(name, DateTime(timezone=True), nullable=nullable)


accounts = Table(
    "accounts",
    metadata,
    Column("open_id", Text, primary_key=True),
    Column("display_name", Text),
    Column("username", Text),
    Column("avatar_url", Text),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    Column("status_reason", Text),
    Column("scopes", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    _ts("connected_at", nullable=False),
    _ts("updated_at", nullable=False),
    # Fernet ciphertext; the plaintext never reaches the database.
    Column("access_token_enc", LargeBinary, nullable=False),
    Column("refresh_token_enc", LargeBinary, nullable=False),
    _ts("access_expires_at", nullable=False),
    _ts("refresh_expires_at", nullable=False),
    # Whether refresh_expires_at is our estimate (TikTok's answer did not state the lifetime): an
    # estimate that has passed condemns nothing, only TikTok refusing the refresh token does.
    Column("refresh_expiry_estimated", Boolean, nullable=False, server_default=text("false")),
    # The refresh lease: who is calling TikTok to rotate this account's refresh token, and until
    # when the others wait for it. Set and cleared in short transactions, so no session is held
    # open across the HTTP call; a holder that dies blocks the others only until the lease ends.
    Column("refresh_lease_owner", Text),
    _ts("refresh_lease_until"),
    # When the accounts UI last completed an authorization (stale deauthorization webhooks are older).
    _ts("authorized_at"),
    # When the account became disconnected; the retention purge counts from here.
    _ts("disconnected_at"),
    CheckConstraint(
        "status IN ('active', 'reauth_required', 'disabled', 'disconnected')",
        name="status",
    ),
)

profile_snapshots = Table(
    "profile_snapshots",
    metadata,
    Column(
        "open_id",
        Text,
        ForeignKey("tiktok.accounts.open_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # The UTC date of capture: one row per account per day, rewritten only when a value changed.
    Column("snapshot_date", Date, primary_key=True),
    Column("follower_count", BigInteger),
    Column("following_count", BigInteger),
    Column("likes_count", BigInteger),
    Column("video_count", BigInteger),
    Column("display_name", Text),
    Column("bio_description", Text),
    Column("avatar_url", Text),
    Column("is_verified", Boolean),
    _ts("captured_at", nullable=False),
    # When the profile was last fetched for this row, changed or not (a cleared batch skips the
    # accounts checked since its run began).
    _ts("checked_at"),
)

videos = Table(
    "videos",
    metadata,
    Column("id", Text, primary_key=True),
    Column(
        "open_id",
        Text,
        ForeignKey("tiktok.accounts.open_id", ondelete="CASCADE"),
        nullable=False,
    ),
    _ts("create_time"),
    Column("title", Text),
    Column("video_description", Text),
    Column("duration", Integer),
    Column("height", Integer),
    Column("width", Integer),
    Column("share_url", Text),
    Column("embed_link", Text),
    Column("embed_html", Text),
    Column("cover_image_url", Text),
    # Parsed from the cover URL's ``x-expires`` query parameter; NULL when absent or garbled.
    _ts("cover_expires_at"),
    Column("like_count", BigInteger),
    Column("comment_count", BigInteger),
    Column("share_count", BigInteger),
    Column("view_count", BigInteger),
    _ts("first_seen_at", nullable=False),
    _ts("last_seen_at", nullable=False),
    # Set when the API stops returning the video; cleared when it comes back.
    _ts("removed_at"),
    # When video/query first left the (live) video out: a pending removal. Cleared whenever a
    # listing or video/query returns the video; it is marked removed only when a later run, at least
    # an hour after this, finds it missing again.
    _ts("missing_since"),
)
# Leads with open_id, so it also serves the foreign key and "videos of an account";
# the incremental removal check scans (open_id, create_time >= window_start).
Index(None, videos.c.open_id, videos.c.create_time)
# Stale covers per account: only live videos need a fresh cover.
Index(
    None,
    videos.c.open_id,
    videos.c.cover_expires_at,
    postgresql_where=videos.c.removed_at.is_(None),
)

video_snapshots = Table(
    "video_snapshots",
    metadata,
    Column(
        "video_id",
        Text,
        ForeignKey("tiktok.videos.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("snapshot_date", Date, primary_key=True),
    Column("like_count", BigInteger),
    Column("comment_count", BigInteger),
    Column("share_count", BigInteger),
    Column("view_count", BigInteger),
    _ts("captured_at", nullable=False),
)

sync_state = Table(
    "sync_state",
    metadata,
    # One row per sync run: the unfinished one is the checkpoint, finished ones are the history.
    Column("sync_id", BigInteger, Identity(always=True), primary_key=True),
    Column(
        "open_id",
        Text,
        ForeignKey("tiktok.accounts.open_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("mode", Text, nullable=False),
    # The video/list cursor (UTC Unix milliseconds) to request next; NULL = start from the newest.
    Column("cursor", BigInteger),
    _ts("window_start"),
    _ts("started_at", nullable=False),
    _ts("updated_at", nullable=False),
    _ts("finished_at"),
    Column("pages", Integer, nullable=False, server_default=text("0")),
    Column("videos_seen", Integer, nullable=False, server_default=text("0")),
    # Videos marked removed: suspects that video/query confirmed gone (added up as they are confirmed).
    Column("removed", Integer),
    # Videos the sync met without a usable id, over every try: while not zero, it marks nothing removed.
    Column("unidentified", Integer, nullable=False, server_default=text("0")),
    # When the listing reached its end and the videos it should have met but did not were stored as
    # removal suspects (in sync_seen_videos); NULL while listing. A retry after it only confirms.
    _ts("listed_at"),
    Column("removal_suspects", Integer),
    # Suspects video/query returned: live after all, updated and never marked.
    Column("suspects_live", Integer, nullable=False, server_default=text("0")),
    # Suspects video/query left out for the first time: pending, judged again by a later run.
    Column("removals_pending", Integer, nullable=False, server_default=text("0")),
    # Confirmed removals not marked because they were too large a share of the account's live videos.
    Column("removals_held", Integer, nullable=False, server_default=text("0")),
    CheckConstraint("mode IN ('full', 'incremental')", name="mode"),
    CheckConstraint("mode = 'full' OR window_start IS NOT NULL", name="incremental_window"),
)
# At most one unfinished sync per account and mode: that is the one begin_sync resumes.
Index(
    "uq_sync_state_open_id_mode_unfinished",
    sync_state.c.open_id,
    sync_state.c.mode,
    unique=True,
    postgresql_where=sync_state.c.finished_at.is_(None),
)

sync_seen_videos = Table(
    "sync_seen_videos",
    metadata,
    # Video ids returned so far by an unfinished sync; kept in the database (not in memory) so
    # removal detection stays correct across a crash and a retried task. Dropped by finish_sync.
    Column(
        "sync_id",
        BigInteger,
        ForeignKey("tiktok.sync_state.sync_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("video_id", Text, primary_key=True),
    # True: not returned by the listing, a removal suspect until video/query answers for it (then
    # false if it came back; the row is deleted once the video is confirmed gone and marked removed).
    Column("suspect", Boolean, nullable=False, server_default=text("false")),
    # When video/query left this suspect out (then suspect is false); finish_sync judges it.
    _ts("missing_at"),
)

oauth_states = Table(
    "oauth_states",
    metadata,
    # Connect attempts started in the accounts UI, waiting for TikTok to send the browser back.
    # Only the SHA-256 of the state is stored: a leaked table does not let anyone finish a flow.
    Column("state_hash", Text, primary_key=True),
    # SHA-256 of the browser's binding cookie, and the Airflow user who started the attempt.
    Column("session_hash", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    # The PKCE code_verifier, Fernet-encrypted with the token encryption key.
    Column("code_verifier_enc", LargeBinary, nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False),
    # Set for "Reconnect": the account the user meant to reconnect.
    Column("expected_open_id", Text),
    _ts("created_at", nullable=False),
    _ts("expires_at", nullable=False),
    # Set once, by the first callback that presents the state: a replay finds it used.
    _ts("used_at"),
)
Index(None, oauth_states.c.expires_at)

# -- Early history, cover archive (migration 0010) ----------------------------------------------

#: Where a capture came from: a ``video/list`` page (backfill, incremental) or ``video/query`` (cover refresh).
CAPTURE_SOURCES = ("list", "query")
#: What an archived image belongs to: a video's cover, or an account's avatar.
ARCHIVE_KINDS = ("cover", "avatar")
VIEW_NAMES = (
    *VIEW_NAMES,
    "video_early_metrics",
    "account_early_medians",
    "mart_account_daily_growth",
    "mart_video_engagement",
    "mart_posting_cadence",
    "mart_videos_removed_weekly",
)
#: Materialized (refreshed by ``tiktok.refresh_marts()``, see tiktok_warehouse.marts); not in VIEW_NAMES.
MATERIALIZED_VIEW_NAMES = ("mart_account_engagement", "mart_top_videos_7d")

video_captures = Table(
    "video_captures",
    metadata,
    # Every capture of a video younger than N days (``[tiktok] early_history_days``, default 14),
    # taken from answers the backfill and the cover refresh already get: no extra API call.
    # No foreign key to videos: a removed video keeps its history; an account's purge removes it.
    Column("video_id", Text, primary_key=True),
    Column("captured_at", DateTime(timezone=True), primary_key=True),
    Column(
        "open_id",
        Text,
        ForeignKey("tiktok.accounts.open_id", ondelete="CASCADE"),
        nullable=False,
    ),
    # From the answer itself, so a capture is an age without joining videos.
    _ts("create_time", nullable=False),
    Column("view_count", BigInteger),
    Column("like_count", BigInteger),
    Column("comment_count", BigInteger),
    Column("share_count", BigInteger),
    Column("source", Text, nullable=False),
    CheckConstraint("source IN ('list', 'query')", name="source"),
)
Index(None, video_captures.c.open_id, video_captures.c.captured_at)

archive_blobs = Table(
    "archive_blobs",
    metadata,
    # One stored object per distinct content: the same bytes are never written twice.
    Column("sha256", Text, primary_key=True),
    Column("path", Text, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("content_type", Text, nullable=False),
    _ts("stored_at", nullable=False),
    CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name="sha256"),
)

cover_archive = Table(
    "cover_archive",
    metadata,
    # One row per content version of a video's cover or an account's avatar. The newest row of a
    # subject is its current image; a removed video keeps its rows (and its blob).
    Column("kind", Text, primary_key=True),
    Column("subject_id", Text, primary_key=True),
    Column("sha256", Text, ForeignKey("tiktok.archive_blobs.sha256"), primary_key=True),
    Column(
        "open_id",
        Text,
        ForeignKey("tiktok.accounts.open_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("path", Text, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("content_type", Text, nullable=False),
    # The CDN's validator of this content, for a conditional request next time (If-None-Match).
    Column("etag", Text),
    _ts("archived_at", nullable=False),
    # The last time the CDN confirmed this content (a 304, or the same bytes again).
    _ts("checked_at", nullable=False),
    CheckConstraint("kind IN ('cover', 'avatar')", name="kind"),
)
Index(None, cover_archive.c.open_id)

rate_budget_slots = Table(
    "rate_budget_slots",
    metadata,
    # The cluster-wide API rate budget (tiktok_provider.budget): ``limit`` rows per app and endpoint.
    # ``app`` is a hash of the API host and client key. A slot is free once ``free_at`` has passed:
    # taking it sets ``free_at`` a window ahead (its lease), the answer a window after the answer.
    Column("app", Text, primary_key=True),
    Column("endpoint", Text, primary_key=True),
    Column("slot_no", Integer, primary_key=True),
    _ts("free_at", nullable=False),
    # host:pid of the process holding the slot (None once released): for a DBA, and for release.
    Column("holder", Text),
)
Index(None, rate_budget_slots.c.app, rate_budget_slots.c.endpoint, rate_budget_slots.c.free_at)

rate_budget_state = Table(
    "rate_budget_state",
    metadata,
    # Per app and endpoint: until when a 429 stops every process of the app from sending to it, and
    # until when a waiting caller above bulk keeps bulk callers (full backfills) out.
    Column("app", Text, primary_key=True),
    Column("endpoint", Text, primary_key=True),
    _ts("paused_until"),
    _ts("wanted_until"),
)

alert_outbox = Table(
    "alert_outbox",
    metadata,
    # The failure messages of one DAG run's account tasks: the first few are sent one by one, the
    # rest are folded into one digest at the run's end (tiktok_pipeline.alert_digest). Text only as
    # sent: already scrubbed of secrets.
    Column("dedupe_key", Text, primary_key=True),
    Column("dag_id", Text, nullable=False),
    Column("run_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("alert", JSONB, nullable=False),
    Column("folded", Boolean, nullable=False),
    _ts("created_at", nullable=False),
    _ts("sent_at"),
    CheckConstraint("kind IN ('task_failed', 'digest')", name="kind"),
)
Index(None, alert_outbox.c.dag_id, alert_outbox.c.run_id)
