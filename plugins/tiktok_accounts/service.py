"""
What the accounts UI does, apart from HTTP: connect, disconnect, purge, the webhook, the page's data.

Everything here is synchronous (the routes run it in a thread). It uses the project's public APIs:
:class:`~tiktok_provider.hooks.tiktok.TikTokDisplayHook` for TikTok (``exchange_code``,
``revoke_token``, ``get_user_info``), the token store for tokens,
:class:`~tiktok_warehouse.accounts_admin.AccountsAdmin` and
:class:`~tiktok_warehouse.oauth_states.PendingAuthorizations` for the rest, and Airflow's own
``trigger_dag`` to start an account's first runs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tiktok_accounts.oauth import authorize_redirect, code_challenge, new_code_verifier, new_state
from tiktok_accounts.pages import EARLY_MARKS, AccountView, TaskLink, VideoTile, follower_chart
from tiktok_accounts.webhook import parse_event, verify_signature
from tiktok_pipeline.common import OPEN_ID
from tiktok_pipeline.names import BACKFILL_DAG_ID, COVER_DAG_ID, FIRST_RUN_ID_PREFIX, PROFILE_DAG_ID, TIKTOK_CONN_ID
from tiktok_warehouse.accounts_admin import REMOVAL_REASONS, AccountsAdmin, days_left, warning_threshold
from tiktok_warehouse.oauth_states import STATE_TTL, PendingAuthorizations

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Engine

    from tiktok_accounts.settings import AccountsSettings
    from tiktok_provider.connection import TikTokConnectionConfig
    from tiktok_provider.hooks.tiktok import TikTokDisplayHook

log = logging.getLogger(__name__)

PROFILE_DAG = PROFILE_DAG_ID
BACKFILL_DAG = BACKFILL_DAG_ID
COVER_DAG = COVER_DAG_ID
#: Started for an account as soon as it is connected, limited to it.
FIRST_RUN_DAGS = (PROFILE_DAG, BACKFILL_DAG)
#: The per-account task of each DAG, for the "latest tasks" links.
ACCOUNT_TASKS = (
    (PROFILE_DAG, "snapshot_profile", "Profile snapshot"),
    (BACKFILL_DAG, "sync_videos", "Video sync"),
    (COVER_DAG, "refresh_covers", "Cover refresh"),
)
PROFILE_FIELDS = ("open_id", "display_name", "avatar_url", "username")
#: What each OAuth error code of TikTok's redirect means (RFC 6749 4.1.2.1); anything else is unknown.
AUTHORIZE_ERRORS = {
    "invalid_request": "the authorization request was malformed (check the client key and the redirect URI).",
    "unauthorized_client": "the app may not use this authorization flow.",
    "unsupported_response_type": "the app may not ask for an authorization code.",
    "invalid_scope": "a requested scope is unknown or not granted to the app on TikTok's developer portal.",
    "invalid_client": "TikTok does not know the app's client key.",
    "server_error": "TikTok had an internal error.",
    "temporarily_unavailable": "TikTok was temporarily unavailable; try again in a few minutes.",
}
RUNS_SEARCHED = 50


class UserFacingError(Exception):
    """Ends a request on a page that says what happened and what to do next; nothing was stored."""

    def __init__(self, title: str, *paragraphs: str, status: int = 400) -> None:
        super().__init__(" ".join(paragraphs))
        self.title = title
        self.paragraphs = list(paragraphs)
        self.status = status


def valid_open_id(value: str | None) -> str:
    if not value or not OPEN_ID.fullmatch(value):
        raise UserFacingError("Not an account", "That is not a TikTok open_id.", status=404)
    return value


def _tiktok_advice(exc: Any, what: str) -> UserFacingError:
    """Turn a TikTok error into a page: what failed, TikTok's code and log_id, what to do next."""
    code = getattr(exc, "code", None) or type(exc).__name__
    log_id = getattr(exc, "log_id", None) or "none"
    message = getattr(exc, "message", str(exc))
    return UserFacingError(
        f"TikTok refused to {what}",
        f"TikTok's {getattr(exc, 'endpoint', None) or 'API'} answered {code}: {message} [log_id={log_id}].",
        status=502 if getattr(exc, "retryable", False) else 400,
    )


# -- resources ------------------------------------------------------------------------------------

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def warehouse_engine(conn_id: str) -> Engine:
    """One pooled engine per warehouse URL for the api-server's life (a changed connection gets a new one)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from tiktok_warehouse.db import get_engine

    url = PostgresHook(postgres_conn_id=conn_id).get_uri()
    with _engines_lock:
        if url not in _engines:
            _engines[url] = get_engine(conn_id)
        return _engines[url]


@dataclass
class Backend:
    """The TikTok app (``tiktok_default``) and its warehouse, for one request."""

    config: TikTokConnectionConfig
    engine: Engine
    conn_id: str = TIKTOK_CONN_ID

    @classmethod
    def load(cls, conn_id: str = TIKTOK_CONN_ID) -> Backend:
        config = cls.load_config(conn_id)
        return cls(config=config, engine=warehouse_engine(config.warehouse_conn_id), conn_id=conn_id)

    @staticmethod
    def load_config(conn_id: str = TIKTOK_CONN_ID) -> TikTokConnectionConfig:
        """Only the TikTok app's connection (no warehouse): enough to check a webhook's signature."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        from tiktok_provider.connection import TikTokConnectionConfig

        try:
            return TikTokConnectionConfig.from_connection(BaseHook.get_connection(conn_id))
        except AirflowNotFoundException:
            raise UserFacingError(
                "The TikTok app is not configured",
                f"There is no Airflow connection {conn_id!r}. Create it (type TikTok Display API: the API "
                "host, the app's client key and secret, and a token_encryption_key in its extra).",
                status=503,
            ) from None

    @property
    def admin(self) -> AccountsAdmin:
        return AccountsAdmin(self.engine)

    @property
    def pending(self) -> PendingAuthorizations:
        return PendingAuthorizations(self.engine, self.config.token_encryption_key)

    def hook(self) -> TikTokDisplayHook:
        """The hook, with a token store on the cached engine; raises if the encryption key is unusable."""
        from tiktok_provider.hooks.tiktok import TikTokDisplayHook
        from tiktok_warehouse.tokens import TokenEncryptionKeyMissing, TokenStore

        if not self.config.token_encryption_key:
            raise TokenEncryptionKeyMissing(self.conn_id)
        store = TokenStore(self.engine, self.config.token_encryption_key, key_conn_id=self.conn_id)
        return TikTokDisplayHook(self.conn_id, token_store=store, priority="interactive")  # a person waits


# -- the page -------------------------------------------------------------------------------------


def account_views(
    backend: Backend, settings: AccountsSettings, *, days: int, now: datetime, ui: str
) -> list[AccountView]:
    """Everything the accounts page shows, one view per account."""
    admin = backend.admin
    healths = admin.health(now=now)
    links = latest_task_links([h.open_id for h in healths], ui=ui)
    views = []
    for health in healths:
        points = admin.follower_series(health.open_id, days=days, now=now)
        effective = health.status
        if health.status == "active" and health.refresh_expires_at <= now and not health.refresh_expiry_estimated:
            effective = "consent_expired"  # the daily check marks it reauth_required
        views.append(
            AccountView(
                health=health,
                effective_status=effective,
                consent_days_left=days_left(health.refresh_expires_at, now),
                consent_warning=(
                    warning_threshold(health.refresh_expires_at, now, settings.warning_days)
                    if health.status == "active"
                    else None
                ),
                chart=follower_chart(points, days=days, now=now),
                growth=points[-1].followers - points[0].followers if len(points) >= 2 else None,
                links=links.get(health.open_id, []),
                videos=latest_videos(admin.engine, health.open_id),
            )
        )
    return views


#: How many of an account's latest videos the page shows.
LATEST_VIDEOS = 6


def latest_videos(engine: Engine, open_id: str, *, limit: int = LATEST_VIDEOS) -> list[VideoTile]:
    """The account's latest videos with their archived cover (content hash) and views at 1h/6h/24h/7d."""
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT v.id, v.title, (SELECT a.sha256 FROM tiktok.cover_archive AS a WHERE a.kind = 'cover'"
                " AND a.subject_id = v.id ORDER BY a.checked_at DESC LIMIT 1) AS sha256"
                " FROM tiktok.videos AS v WHERE v.open_id = :o"
                " ORDER BY v.create_time DESC NULLS LAST, v.id LIMIT :n"
            ),
            {"o": open_id, "n": limit},
        ).all()
        early: dict[str, dict[str, int]] = {}
        if rows:
            for video_id, mark, views in conn.execute(
                text(
                    "SELECT video_id, mark, view_count FROM tiktok.video_early_metrics"
                    " WHERE video_id = ANY(:ids) AND mark = ANY(:marks) AND view_count IS NOT NULL"
                ),
                {"ids": [r[0] for r in rows], "marks": list(EARLY_MARKS)},
            ):
                early.setdefault(video_id, {})[mark] = int(views)
    return [VideoTile(r[0], r[1], r[2], early.get(r[0], {})) for r in rows]


def archived_blob(engine: Engine, sha256: str) -> tuple[str, str] | None:
    """The stored path and content type of an archived image an account still has, or None."""
    import re

    from sqlalchemy import text

    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        return None
    with engine.connect() as conn:
        row = conn.execute(
            # Only an image some account we keep still has: a purged account's covers stop being
            # served (their rows go with the account; the blob may be shared, so it stays stored).
            text(
                "SELECT b.path, b.content_type FROM tiktok.archive_blobs AS b WHERE b.sha256 = :s"
                " AND EXISTS (SELECT 1 FROM tiktok.cover_archive AS c WHERE c.sha256 = b.sha256)"
            ),
            {"s": sha256},
        ).first()
    # Only the raster types the archive stores (it sniffs them): never SVG or HTML from a row written
    # otherwise, which would run script on the page's origin.
    return (row[0], row[1]) if row and row[1] in RASTER_TYPES else None


#: The content types the cover route serves (those ``tiktok_pipeline.archive`` stores).
RASTER_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif", "image/heic"})


def latest_task_links(open_ids: Sequence[str], *, ui: str) -> dict[str, list[TaskLink]]:
    """For each account, its task instance in the latest run of each per-account DAG that included it.

    The map index of an account is its position in that run's ``select_accounts`` result; a run not
    that far yet links to the run itself when its ``accounts`` param names the account.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    wanted = set(open_ids)
    found: dict[str, list[TaskLink]] = {open_id: [] for open_id in open_ids}
    if not wanted:
        return found
    with create_session() as session:
        for dag_id, task_id, label in ACCOUNT_TASKS:
            runs = session.execute(
                select(DagRun.run_id, DagRun.conf, DagRun.state)
                .where(DagRun.dag_id == dag_id)
                .order_by(DagRun.id.desc())
                .limit(RUNS_SEARCHED)
            ).all()
            if not runs:
                continue
            selected = {
                row.run_id: XComModel.deserialize_value(row)
                for row in session.execute(
                    select(XComModel.run_id, XComModel.value).where(
                        XComModel.dag_id == dag_id,
                        XComModel.task_id == "select_accounts",
                        XComModel.key == "return_value",
                        XComModel.map_index == -1,
                        XComModel.run_id.in_([r.run_id for r in runs]),
                    )
                )
            }
            places: dict[str, tuple[str, int | None, str | None]] = {}
            for run in runs:  # newest first
                chosen = selected.get(run.run_id)
                if isinstance(chosen, list):
                    for index, item in enumerate(chosen):
                        open_id = item.get("open_id") if isinstance(item, dict) else None
                        if open_id in wanted and open_id not in places:
                            places[open_id] = (run.run_id, index, None)
                elif run.state in ("queued", "running"):
                    named = (run.conf or {}).get("accounts") or list(wanted)
                    for open_id in wanted & set(named if isinstance(named, list) else []):
                        places.setdefault(open_id, (run.run_id, None, str(run.state)))
            states = {
                (row.run_id, row.map_index): row.state
                for row in session.execute(
                    select(TaskInstance.run_id, TaskInstance.map_index, TaskInstance.state).where(
                        TaskInstance.dag_id == dag_id,
                        TaskInstance.task_id == task_id,
                        TaskInstance.run_id.in_({run_id for run_id, _, _ in places.values()}),
                    )
                )
            }
            for open_id, (run_id, index, run_state) in places.items():
                run_url = f"{ui}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"
                if index is None:
                    found[open_id].append(TaskLink(label, f"run {run_state}", run_url))
                else:
                    state = states.get((run_id, index))
                    url = f"{run_url}/tasks/{quote(task_id)}/mapped/{index}"
                    found[open_id].append(TaskLink(label, str(state) if state else None, url))
    return found


# -- connect --------------------------------------------------------------------------------------


def start_connect(
    backend: Backend,
    settings: AccountsSettings,
    *,
    user_id: str,
    binding: str,
    scopes: Sequence[str],
    expected_open_id: str | None,
    redirect_uri: str,
    now: datetime,
) -> str:
    """Record a connect attempt; return the address of TikTok's consent page to send the browser to."""
    from tiktok_warehouse.tokens import TokenStoreError

    state, verifier = new_state(), new_code_verifier()
    try:
        backend.pending.start(
            state=state,
            binding=binding,
            user_id=user_id,
            code_verifier=verifier,
            redirect_uri=redirect_uri,
            scopes=scopes,
            expected_open_id=expected_open_id,
            now=now,
        )
    except TokenStoreError as exc:
        raise UserFacingError("Tokens could not be stored", str(exc), status=503) from None
    return authorize_redirect(
        settings.authorize_page(backend.config.base_url),
        client_key=backend.config.client_key,
        scopes=scopes,
        redirect_uri=redirect_uri,
        state=state,
        challenge=code_challenge(verifier, settings.pkce_encoding),
    )


@dataclass
class Connected:
    """What a finished connect did."""

    open_id: str
    expected_open_id: str | None
    problems: list[str] = field(default_factory=list)
    runs: list[tuple[str, str]] = field(default_factory=list)


def finish_connect(
    backend: Backend,
    *,
    params: dict[str, str],
    binding: str | None,
    user: Any,
    now: datetime,
) -> Connected:
    """Handle TikTok's redirect back: check everything, exchange the code, store, start the first runs."""
    from tiktok_provider.errors import TikTokError
    from tiktok_warehouse.oauth_states import StateRejected
    from tiktok_warehouse.tokens import TokenStoreError

    pending = backend.pending
    if params.get("error"):
        # Use the attempt up (if it is this browser's), so the same answer cannot be replayed.
        with contextlib.suppress(StateRejected, TokenStoreError):
            pending.finish(state=params.get("state"), binding=binding, user_id=user.get_id(), now=now)
        error = params["error"]
        # The description is whatever the address said: logged (quoted), never shown as TikTok's words.
        log.warning(
            "TikTok sent user %s back without authorizing: error=%r error_description=%r",
            user.get_name(),
            error[:100],
            params.get("error_description", "")[:300],
        )
        if error == "access_denied":
            raise UserFacingError(
                "Consent denied",
                "The account was not connected: the authorization was denied on TikTok's consent page.",
                "Nothing was stored. To connect it, start again with Connect account and approve.",
            )
        known = AUTHORIZE_ERRORS.get(error)
        raise UserFacingError(
            "TikTok did not authorize the app",
            f"TikTok answered {error}: {known}" if known else "TikTok answered with an error code we do not know.",
            "Nothing was stored. Check the app's settings on TikTok (scopes, redirect URI), then connect again. "
            "The api-server's log has TikTok's full answer.",
        )
    code = params.get("code")
    if not code:
        raise UserFacingError("No authorization code", "TikTok sent you back without a code; nothing was stored.")

    # Everything that can fail without TikTok, before the single-use code is spent.
    try:
        hook = backend.hook()
    except TokenStoreError as exc:
        raise UserFacingError("Tokens could not be stored", str(exc), "Nothing was exchanged.", status=503) from None
    blocker = backend.admin.write_blocker()
    if blocker is not None:
        raise UserFacingError(
            "The warehouse is read-only for Airflow",
            f"{blocker} The tokens could not be stored.",
            "Nothing was exchanged (the authorization code is unspent): make the warehouse writable for the "
            "role (or point tiktok_warehouse at the primary), then connect again.",
            status=503,
        )
    try:
        attempt = pending.finish(state=params.get("state"), binding=binding, user_id=user.get_id(), now=now)
    except StateRejected as exc:
        raise UserFacingError(
            "This connect link cannot be used", str(exc), "Nothing was stored. Start again with Connect account."
        ) from None
    except TokenStoreError as exc:
        raise UserFacingError("Tokens could not be stored", str(exc), status=503) from None

    try:
        grant = hook.exchange_code(code, attempt.redirect_uri, attempt.code_verifier)
    except TikTokError as exc:
        error = _tiktok_advice(exc, "exchange the authorization code")
        if getattr(exc, "code", None) == "invalid_grant":
            error.paragraphs.append(
                "The code expired (they live minutes), was already used, or was issued for another redirect "
                f"URI than {attempt.redirect_uri}. Nothing was stored: start again with Connect account."
            )
        else:
            error.paragraphs.append("Nothing was stored. Start again with Connect account.")
        raise error from None
    try:
        hook.token_store.save_grant(grant)
    except Exception as exc:
        log.error("Storing the tokens of TikTok account %s failed: %s", grant.open_id, type(exc).__name__)
        raise UserFacingError(
            "Tokens could not be stored",
            f"TikTok authorized account {grant.open_id}, but storing its tokens failed ({type(exc).__name__}). "
            "The authorization code is spent: check the warehouse, then connect the account again.",
            status=503,
        ) from None
    backend.admin.mark_authorized(grant.open_id, now=now)
    log.info("User %s connected TikTok account %s", user.get_name(), grant.open_id)
    result = Connected(open_id=grant.open_id, expected_open_id=attempt.expected_open_id)
    _fetch_profile(backend, hook, grant.open_id, grant.scopes, now, result)
    _start_first_runs(grant.open_id, user, now, result)
    return result


def _fetch_profile(
    backend: Backend, hook: TikTokDisplayHook, open_id: str, scopes: frozenset[str], now: datetime, result: Connected
) -> None:
    from tiktok_provider.errors import TikTokError
    from tiktok_warehouse.loads import Warehouse

    if "user.info.basic" not in scopes:
        result.problems.append("profile")
        return
    fields = [f for f in PROFILE_FIELDS if f != "username" or "user.info.profile" in scopes]
    try:
        Warehouse(backend.engine).upsert_account_profile(open_id, hook.get_user_info(open_id, fields), now=now)
    except TikTokError as exc:
        log.warning("Could not fetch the profile of TikTok account %s: %s", open_id, exc)
        result.problems.append("profile")


def _start_first_runs(open_id: str, user: Any, now: datetime, result: Connected) -> None:
    """Trigger the first profile snapshot and video backfill, limited to this account."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType

    for dag_id in FIRST_RUN_DAGS:
        run_id = f"{FIRST_RUN_ID_PREFIX}{open_id}__{now:%Y%m%dT%H%M%S%f}"
        try:
            trigger_dag(
                dag_id,
                run_id=run_id,
                conf={"accounts": [open_id]},
                triggered_by=DagRunTriggeredByType.UI,
                triggering_user_name=user.get_name(),
                note="First run after connecting the account in TikTok accounts",
            )
        except Exception as exc:
            log.warning("Could not start %s for TikTok account %s: %s", dag_id, open_id, exc)
            result.problems.append("runs")
            continue
        result.runs.append((dag_id, run_id))
        with create_session() as session:
            if (model := DagModel.get_dagmodel(dag_id, session=session)) is not None and model.is_paused:
                result.problems.append("paused")


# -- disconnect and purge -------------------------------------------------------------------------


def disconnect(backend: Backend, open_id: str, *, user: Any, now: datetime, timeout: float) -> str:
    """Revoke the account's authorization at TikTok, then mark it disconnected; return what happened.

    Nothing is revoked unless the warehouse can record it. The revoke is one attempt of at most
    ``timeout`` seconds (a person waits for it): if TikTok does not answer in time, the page says
    the authorization may be revoked and to press Disconnect again. A token TikTok no longer accepts
    means the authorization is gone already; the account is then marked disconnected all the same.
    """
    from tiktok_provider.errors import TikTokAccessTokenInvalid, TikTokError, TikTokNetworkError, TikTokReauthRequired
    from tiktok_warehouse.tokens import AccountNotFound, TokenStoreError

    status = backend.admin.status(open_id)
    if status is None:
        raise UserFacingError("No such account", f"No TikTok account {open_id} is connected.", status=404)
    if status == "disconnected":
        return "already"
    blocker = backend.admin.write_blocker()
    if blocker is not None:
        raise UserFacingError(
            "The warehouse is read-only for Airflow",
            f"{blocker} TikTok account {open_id} could not be marked disconnected.",
            "Nothing was changed: its authorization was not revoked at TikTok. Make the warehouse writable, "
            "then press Disconnect again.",
            status=503,
        )
    try:
        hook = backend.hook()
        tokens = hook.token_store.get(open_id)
    except AccountNotFound:
        raise UserFacingError("No such account", f"No TikTok account {open_id} is connected.", status=404) from None
    except TokenStoreError as exc:
        raise UserFacingError(
            "The account's tokens cannot be read",
            str(exc),
            "Nothing was changed. Without its tokens the authorization cannot be revoked at TikTok; the creator "
            "can remove the app in TikTok's settings (TikTok then sends authorization.removed).",
            status=503,
        ) from None
    already_gone = None
    try:
        token = tokens.access_token
        if status == "active" and tokens.access_expires_at <= now + timedelta(minutes=1):
            token = hook.access_token(open_id)  # refreshed (and stored) under the store's row lock
        # One try of at most ``timeout`` seconds: the hook's own retries last minutes, too long for a page.
        hook.revoke_token(token, open_id=open_id, within=timeout)
    except (TikTokReauthRequired, TikTokAccessTokenInvalid) as exc:
        already_gone = exc
    except TikTokNetworkError as exc:
        log.warning("Revoking TikTok account %s at %s got no answer: %s", open_id, exc.endpoint, exc.message)
        raise UserFacingError(
            "TikTok did not answer in time",
            f"Revoking the authorization of TikTok account {open_id} at TikTok's {exc.endpoint} got no answer "
            f"({exc.message}).",
            "It may have been revoked all the same: the account is still shown as connected here. Press "
            "Disconnect again; if TikTok says the token is gone, the account is marked disconnected.",
            status=504,
        ) from None
    except TikTokError as exc:
        error = _tiktok_advice(exc, "revoke the account's authorization")
        error.paragraphs.append("Nothing was changed: the account stays connected. Try Disconnect again later.")
        raise error from None
    reason = f"disconnected by {user.get_name()} in TikTok accounts"
    if already_gone is not None:
        reason += f" (TikTok no longer accepted its token: {getattr(already_gone, 'code', None) or 'rejected'})"
    try:
        return backend.admin.mark_disconnected(open_id, reason, now=now)
    except Exception as exc:
        log.error(
            "TikTok account %s was revoked at TikTok, but marking it disconnected failed: %s",
            open_id,
            type(exc).__name__,
        )
        raise UserFacingError(
            "Revoked at TikTok, not recorded here",
            f"TikTok revoked the authorization of account {open_id}, but marking it disconnected in the "
            f"warehouse failed ({type(exc).__name__}).",
            "Press Disconnect again once the warehouse is writable: TikTok will say the token is gone, and the "
            "account is then marked disconnected.",
            status=503,
        ) from None


def purge(backend: Backend, open_id: str, *, confirm: str | None) -> Any:
    from tiktok_warehouse.accounts_admin import AccountNotDisconnected

    if confirm != open_id:
        raise UserFacingError(
            "Purge not confirmed", f"Type the account's open_id ({open_id}) to confirm the purge. Nothing was deleted."
        )
    try:
        return backend.admin.purge(open_id)
    except AccountNotDisconnected as exc:
        if exc.status is None:
            return None  # purged already (a double-submitted form): the page says so
        raise UserFacingError("Disconnect first", str(exc), status=409) from None


# -- the webhook ----------------------------------------------------------------------------------


def handle_webhook(
    backend: Backend, settings: AccountsSettings, *, signature: str | None, body: bytes, now: datetime
) -> dict[str, Any]:
    """Verify and apply one TikTok webhook delivery; raise ``WebhookRejected`` to refuse it."""
    verify_signature(signature, body, backend.config.client_secret, now=now.timestamp())
    event = parse_event(body)
    if event.client_key is not None and event.client_key != backend.config.client_key:
        log.warning("Ignored a TikTok webhook for another app (client_key %s)", event.client_key[:40])
        return {"result": "ignored", "why": "another app's event"}
    if event.event != "authorization.removed":
        return {"result": "ignored", "why": f"event {event.event[:60]} needs nothing"}
    if not event.open_id or not OPEN_ID.fullmatch(event.open_id):
        return {"result": "ignored", "why": "no valid user_openid"}
    why = REMOVAL_REASONS.get(event.reason if event.reason is not None else 0, "unknown reason")
    result = backend.admin.mark_disconnected(
        event.open_id, f"TikTok: authorization removed ({why})", now=now, event_time=event.create_time
    )
    purged = backend.admin.apply_retention(settings.retention_days, now=now) if result != "unknown" else []
    log.info("TikTok webhook authorization.removed for %s: %s", event.open_id, result)
    return {"result": result, "open_id": event.open_id, "purged": event.open_id in purged}


def now_utc() -> datetime:
    return datetime.now(UTC)


STATE_MAX_AGE = int(STATE_TTL.total_seconds()) + 60
