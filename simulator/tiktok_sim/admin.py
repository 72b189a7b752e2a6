"""Expose the ``/_sim/`` admin API that tests and the demo drive the simulator with.

JSON in, JSON out; no auth (the server binds 127.0.0.1 by default).  Errors are
``{"detail": "..."}`` with 400 (bad value), 404 (unknown account or video) or 422 (malformed body).
Token values never appear here: tokens are described by a SHA-256 fingerprint.

==========  =============================================  ============================================
method      path                                           what
==========  =============================================  ============================================
GET         /_sim/health                                   liveness, client key, account count
GET/POST    /_sim/config                                   read / change runtime settings
GET/POST    /_sim/accounts                                 list / create accounts
GET         /_sim/accounts/{open_id}                       every user field, ground truth
GET         /_sim/accounts/{open_id}/video_ids             public visible ids, newest first
GET         /_sim/accounts/{open_id}/videos                public videos with all fields (paged)
POST        /_sim/accounts/{open_id}/videos                add videos
GET         /_sim/accounts/{open_id}/tokens                token metadata (fingerprints, status)
POST        /_sim/accounts/{open_id}/expire_access_tokens  expire live access tokens now
POST        /_sim/accounts/{open_id}/revoke                revoke access and/or refresh tokens
GET/DELETE  /_sim/videos/{video_id}                        one video's ground truth / delete it
POST        /_sim/videos/{video_id}/private                privatise (or publish) a video
POST        /_sim/videos/{video_id}/cover                  change a video's cover image (new bytes)
POST        /_sim/accounts/{open_id}/avatar                change an account's avatar image (new bytes)
POST        /_sim/codes                                    mint an authorization code
GET/POST    /_sim/clock                                    read / advance, set, freeze the clock
GET/POST    /_sim/faults, DELETE /_sim/faults              read / set / clear faults
POST        /_sim/ratelimit/reset                          forget the rate limiter's windows
GET         /_sim/stats, POST /_sim/stats/reset            counters / zero them and the log
GET         /_sim/requests                                 the request log
==========  =============================================  ============================================
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from tiktok_sim.accounts import Account
from tiktok_sim.config import parse_time
from tiktok_sim.fields import USER_FIELD_SCOPES, VIDEO_FIELDS, render_user, render_video
from tiktok_sim.oauth import parse_scopes
from tiktok_sim.state import Simulator

GROUND_TRUTH_VIDEO_FIELDS = [name for name in VIDEO_FIELDS if name != "cover_image_url"]


class CreateAccount(BaseModel):
    videos: int = Field(10, ge=0, le=1_000_000)
    display_name: str | None = None
    username: str | None = None
    video_title: str | None = Field(None, description="the title of every video of the account")
    video_description: str | None = Field(None, description="the description of every video of the account")


class AddVideos(BaseModel):
    count: int = Field(1, ge=1, le=100_000)
    create_time: int | None = Field(None, description="Unix seconds; default: the simulated now")


class Privacy(BaseModel):
    private: bool = True


class MintCode(BaseModel):
    open_id: str
    scopes: list[str] | str
    redirect_uri: str
    code_challenge: str | None = None
    code_challenge_method: str = "S256"


class Revoke(BaseModel):
    access: bool = True
    refresh: bool = True


class Clock(BaseModel):
    advance: float | None = None
    set: float | str | None = None
    frozen: bool | None = None


class NextFault(BaseModel):
    kind: str
    count: int = Field(1, ge=0, le=1_000_000)


class Faults(BaseModel):
    endpoint: str
    probabilities: dict[str, float] | None = None
    next: list[NextFault] | None = None
    slow_seconds: float | None = None


def build_admin_router(sim: Simulator) -> APIRouter:
    """Return the ``/_sim/`` routes bound to ``sim``."""
    router = APIRouter(prefix="/_sim", tags=["simulator admin"])

    def account_or_404(open_id: str) -> Account:
        account = sim.accounts.get(open_id)
        if account is None:
            raise HTTPException(404, f"no account with open_id {open_id!r}")
        return account

    def summary(account: Account) -> dict[str, Any]:
        profile = account.profile
        return {
            "index": profile.index,
            "open_id": profile.open_id,
            "union_id": profile.union_id,
            "username": profile.username,
            "display_name": profile.display_name,
            "video_count": account.public_count(sim.now()),
            "videos_total": len(account.ids),
            "private_videos": len(account.private),
            "deleted_videos": len(account.deleted),
        }

    def video_id_or_400(video_id: str) -> int:
        if not (video_id.isascii() and video_id.isdigit()) or len(video_id) > 19:
            raise HTTPException(400, f"not a video id: {video_id!r}")
        return int(video_id)

    def clock_state() -> dict[str, Any]:
        now = sim.now()
        return {
            "now": now,
            "iso": datetime.fromtimestamp(now, UTC).isoformat(),
            "offset": sim.clock.offset,
            "frozen": sim.clock.frozen,
        }

    @router.get("/health")
    def health() -> dict[str, Any]:
        with sim.lock:
            return {
                "status": "ok",
                "client_key": sim.config.client_key,
                "accounts": len(sim.accounts.accounts),
                "now": sim.now(),
            }

    @router.get("/config")
    def get_config() -> dict[str, Any]:
        with sim.lock:
            return sim.config.public()

    @router.post("/config")
    def set_config(values: dict[str, Any]) -> dict[str, Any]:
        with sim.lock:
            try:
                sim.config.update(values, runtime_only=True)
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from None
            return sim.config.public()

    @router.get("/accounts")
    def list_accounts() -> dict[str, Any]:
        with sim.lock:
            return {"accounts": [summary(account) for account in sim.accounts.accounts]}

    @router.post("/accounts", status_code=201)
    def create_account(body: CreateAccount) -> dict[str, Any]:
        with sim.lock:
            return summary(sim.accounts.create(body.videos, **body.model_dump(exclude={"videos"})))

    @router.get("/accounts/{open_id}")
    def get_account(open_id: str, request: Request) -> dict[str, Any]:
        base_url = str(request.base_url)
        with sim.lock:
            account = account_or_404(open_id)
            user = render_user(
                account,
                list(USER_FIELD_SCOPES),
                sim.now(),
                sim.config.epoch,
                lambda obj: sim.cdn_url(base_url, "avatar", obj),
            )
            return {**summary(account), "user": user}

    @router.get("/accounts/{open_id}/video_ids")
    def video_ids(open_id: str) -> dict[str, Any]:
        with sim.lock:
            account = account_or_404(open_id)
            ids = [str(account.ids[p]) for p in account.public_positions(sim.now())]
            return {"open_id": open_id, "video_ids": ids}

    @router.get("/accounts/{open_id}/videos")
    def videos(
        open_id: str,
        offset: int = Query(0, ge=0),
        limit: int = Query(1000, ge=1, le=100_000),
        at: float | None = Query(None, description="simulated time to compute counts at"),
    ) -> dict[str, Any]:
        with sim.lock:
            account = account_or_404(open_id)
            now = sim.now() if at is None else at
            positions = account.public_positions(sim.now())
            rows = [
                render_video(sim.config.seed, account, p, GROUND_TRUTH_VIDEO_FIELDS, now, lambda _vid: "")
                for p in positions[offset : offset + limit]
            ]
            return {"open_id": open_id, "total": len(positions), "at": now, "videos": rows}

    @router.post("/accounts/{open_id}/videos", status_code=201)
    def add_videos(open_id: str, body: AddVideos) -> dict[str, Any]:
        with sim.lock:
            account = account_or_404(open_id)
            create_time = int(sim.now()) if body.create_time is None else body.create_time
            try:
                ids = [str(account.add_video(create_time, sim.accounts.taken_ids)) for _ in range(body.count)]
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from None
            return {"open_id": open_id, "video_ids": ids}

    @router.get("/accounts/{open_id}/tokens")
    def tokens(open_id: str) -> dict[str, Any]:
        with sim.lock:
            account_or_404(open_id)
            return {"open_id": open_id, "tokens": sim.tokens.describe(open_id, sim.now())}

    @router.post("/accounts/{open_id}/expire_access_tokens")
    def expire_access_tokens(open_id: str) -> dict[str, Any]:
        with sim.lock:
            account_or_404(open_id)
            return {"expired": sim.tokens.expire_access_tokens(open_id, sim.now())}

    @router.post("/accounts/{open_id}/revoke")
    def revoke(open_id: str, body: Revoke | None = None) -> dict[str, Any]:
        body = body or Revoke()
        with sim.lock:
            account_or_404(open_id)
            return {"revoked": sim.tokens.revoke_account(open_id, access=body.access, refresh=body.refresh)}

    @router.get("/videos/{video_id}")
    def get_video(video_id: str) -> dict[str, Any]:
        numeric = video_id_or_400(video_id)
        with sim.lock:
            found = sim.accounts.find_video(numeric)
            if found is None:
                former = sim.accounts.was_deleted(numeric)
                if former is None:
                    raise HTTPException(404, f"no video {video_id}")
                return {"open_id": former.open_id, "status": "deleted", "video": None}
            account, position = found
            now = sim.now()
            status = "private" if not account.is_public(position) else "public"
            if account.ms[position] >= (int(now) + 1) * 1000:
                status = "scheduled"
            video = render_video(sim.config.seed, account, position, GROUND_TRUTH_VIDEO_FIELDS, now, lambda _vid: "")
            return {"open_id": account.open_id, "status": status, "video": video}

    @router.delete("/videos/{video_id}")
    def delete_video(video_id: str) -> dict[str, Any]:
        numeric = video_id_or_400(video_id)
        with sim.lock:
            found = sim.accounts.find_video(numeric)
            if found is None:
                raise HTTPException(404, f"no video {video_id}")
            found[0].delete_video(numeric)
            return {"deleted": video_id, "open_id": found[0].open_id}

    @router.post("/videos/{video_id}/private")
    def set_private(video_id: str, body: Privacy | None = None) -> dict[str, Any]:
        body = body or Privacy()
        numeric = video_id_or_400(video_id)
        with sim.lock:
            found = sim.accounts.find_video(numeric)
            if found is None:
                raise HTTPException(404, f"no video {video_id}")
            found[0].set_private(numeric, body.private)
            return {"video_id": video_id, "open_id": found[0].open_id, "private": body.private}

    @router.post("/videos/{video_id}/cover")
    def change_cover(video_id: str) -> dict[str, Any]:
        numeric = video_id_or_400(video_id)
        with sim.lock:
            if sim.accounts.find_video(numeric) is None:
                raise HTTPException(404, f"no video {video_id}")
            key = f"cover/{video_id}"
            sim.cover_versions[key] = sim.cover_versions.get(key, 0) + 1
            return {"video_id": video_id, "cover_version": sim.cover_versions[key]}

    @router.post("/accounts/{open_id}/avatar")
    def change_avatar(open_id: str) -> dict[str, Any]:
        with sim.lock:
            account_or_404(open_id)
            key = f"avatar/{open_id}"
            sim.cover_versions[key] = sim.cover_versions.get(key, 0) + 1
            return {"open_id": open_id, "avatar_version": sim.cover_versions[key]}

    @router.post("/codes", status_code=201)
    def mint_code(body: MintCode) -> dict[str, Any]:
        with sim.lock:
            account_or_404(body.open_id)
            try:
                scopes = parse_scopes(body.scopes)
                code = sim.tokens.mint_code(
                    open_id=body.open_id,
                    scopes=scopes,
                    redirect_uri=body.redirect_uri,
                    expires_at=sim.now() + sim.config.code_ttl,
                    code_challenge=body.code_challenge,
                    code_challenge_method=body.code_challenge_method,
                )
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from None
            return {
                "code": code,
                "open_id": body.open_id,
                "scopes": list(scopes),
                "redirect_uri": body.redirect_uri,
                "expires_in": sim.config.code_ttl,
            }

    @router.get("/clock")
    def get_clock() -> dict[str, Any]:
        with sim.lock:
            return clock_state()

    @router.post("/clock")
    def set_clock(body: Clock) -> dict[str, Any]:
        with sim.lock:
            if body.frozen is True:
                sim.clock.freeze()
            elif body.frozen is False:
                sim.clock.unfreeze()
            if body.set is not None:
                try:
                    sim.clock.set(parse_time(body.set))
                except ValueError as exc:
                    raise HTTPException(400, str(exc)) from None
            if body.advance is not None:
                sim.clock.advance(body.advance)
            return clock_state()

    @router.get("/faults")
    def get_faults() -> dict[str, Any]:
        with sim.lock:
            return sim.faults.describe()

    @router.post("/faults")
    def set_faults(body: Faults) -> dict[str, Any]:
        with sim.lock:
            try:
                sim.faults.configure(
                    body.endpoint,
                    probabilities=body.probabilities,
                    next_faults=[(item.kind, item.count) for item in body.next or []],
                    slow_seconds=body.slow_seconds,
                )
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from None
            return sim.faults.describe()

    @router.delete("/faults")
    def clear_faults(endpoint: str | None = None) -> dict[str, Any]:
        with sim.lock:
            try:
                sim.faults.clear(endpoint)
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from None
            return sim.faults.describe()

    @router.post("/ratelimit/reset")
    def reset_rate_limits() -> dict[str, Any]:
        with sim.lock:
            sim.limiter.reset()
            return {"reset": True}

    @router.get("/stats")
    def stats() -> dict[str, Any]:
        with sim.lock:
            return sim.stats.snapshot()

    @router.post("/stats/reset")
    def reset_stats() -> dict[str, Any]:
        with sim.lock:
            sim.stats.reset()
            return sim.stats.snapshot()

    @router.get("/requests")
    def requests_log(
        since: int = Query(0, ge=0),
        limit: int | None = Query(None, ge=1),
        endpoint: str | None = None,
        open_id: str | None = None,
    ) -> dict[str, Any]:
        with sim.lock:
            return {"requests": sim.stats.requests(since=since, limit=limit, endpoint=endpoint, open_id=open_id)}

    return router
