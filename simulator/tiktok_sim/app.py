"""Serve the simulator over HTTP: the Display API, OAuth, the CDN and the ``/_sim/`` admin API.

Routes match the real paths exactly, trailing slash included (``/v2/user/info/``); there are no
slash redirects.  Handlers read the raw request themselves so that they can answer exactly what
TikTok would -- including the malformed answers fault injection asks for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from fastapi import FastAPI, Request, Response

from tiktok_sim import display, oauth_endpoints
from tiktok_sim.admin import build_admin_router
from tiktok_sim.authorize import build_authorize_router
from tiktok_sim.covers import CDN_KINDS, JPEG
from tiktok_sim.display import Incoming
from tiktok_sim.envelope import Outcome
from tiktok_sim.state import Simulator
from tiktok_sim.stats import RequestRecord
from tiktok_sim.webhooks import build_webhook_router

Handler = Callable[[Simulator, Incoming, RequestRecord, str | None], Outcome]


async def _serve(sim: Simulator, request: Request, endpoint: str, handler: Handler) -> Response:
    started = time.perf_counter()
    incoming = Incoming(
        fields=request.query_params.getlist("fields"),
        body=await request.body(),
        authorization=request.headers.get("authorization"),
        content_type=request.headers.get("content-type", ""),
        base_url=str(request.base_url),
    )
    record = RequestRecord(method=request.method, path=request.url.path, endpoint=endpoint)
    with sim.lock:
        fault = sim.faults.draw(endpoint)
        delay = sim.faults.slow_seconds(endpoint) if fault == "slow" else 0.0
    if delay:
        await asyncio.sleep(delay)
    with sim.lock:
        record.fault = fault
        outcome = handler(sim, incoming, record, fault)
        record.status = outcome.status
        record.error_code = outcome.error_code
        record.log_id = outcome.log_id
        record.sim_time = sim.now()
        record.duration_ms = round((time.perf_counter() - started) * 1000, 3)
        sim.stats.record(record)
    return Response(
        content=outcome.body(),
        status_code=outcome.status,
        media_type=outcome.media_type,
        headers=outcome.all_headers(),
    )


def _display_handler(endpoint: str) -> Handler:
    def handler(sim: Simulator, incoming: Incoming, record: RequestRecord, fault: str | None) -> Outcome:
        return display.handle(sim, endpoint, incoming, record, fault)

    return handler


def create_app(sim: Simulator) -> FastAPI:
    """Return the ASGI application serving ``sim``."""
    app = FastAPI(
        title="TikTok Display API simulator",
        description="Admin API of the simulator; the /v2/ routes follow TikTok's contract.",
        redirect_slashes=False,
        docs_url="/_sim/docs",
        redoc_url=None,
        openapi_url="/_sim/openapi.json",
    )
    app.state.simulator = sim
    app.include_router(build_admin_router(sim))
    app.include_router(build_webhook_router(sim))
    app.include_router(build_authorize_router(sim))

    @app.get("/v2/user/info/", include_in_schema=False)
    async def user_info(request: Request) -> Response:
        return await _serve(sim, request, "user_info", _display_handler("user_info"))

    @app.post("/v2/video/list/", include_in_schema=False)
    async def video_list(request: Request) -> Response:
        return await _serve(sim, request, "video_list", _display_handler("video_list"))

    @app.post("/v2/video/query/", include_in_schema=False)
    async def video_query(request: Request) -> Response:
        return await _serve(sim, request, "video_query", _display_handler("video_query"))

    @app.post("/v2/oauth/token/", include_in_schema=False)
    async def oauth_token(request: Request) -> Response:
        return await _serve(sim, request, "oauth_token", oauth_endpoints.handle_token)

    @app.post("/v2/oauth/revoke/", include_in_schema=False)
    async def oauth_revoke(request: Request) -> Response:
        return await _serve(sim, request, "oauth_revoke", oauth_endpoints.handle_revoke)

    @app.get("/cdn/{kind}/{name}", include_in_schema=False)
    def cdn(kind: str, name: str, request: Request) -> Response:
        if kind not in CDN_KINDS or not name.endswith(".jpeg"):
            return Response("404 Not Found\n", status_code=404, media_type="text/plain")
        record = RequestRecord(method="GET", path=request.url.path, endpoint=f"cdn_{kind}")
        query = request.query_params
        with sim.lock:
            now = sim.now()
            reason = sim.signer.check(
                kind, name.removesuffix(".jpeg"), query.get("x-expires"), query.get("x-signature"), now
            )
            record.status = 200 if reason is None else 403
            record.error_code = reason
            record.sim_time = now
            sim.stats.record(record)
        if reason is not None:
            return Response(f"403 Forbidden: {reason}\n", status_code=403, media_type="text/plain")
        return Response(JPEG, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=0"})

    return app
