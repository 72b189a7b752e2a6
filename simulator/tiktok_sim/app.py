"""Serve the simulator over HTTP: the Display API, OAuth, the CDN and the ``/_sim/`` admin API.

Routes match the real paths exactly, trailing slash included (``/v2/user/info/``); there are no
slash redirects.  Handlers read the raw request themselves so that they can answer exactly what
TikTok would -- including the malformed answers fault injection asks for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from tiktok_sim import covers, display, oauth_endpoints
from tiktok_sim.admin import build_admin_router
from tiktok_sim.authorize import build_authorize_router
from tiktok_sim.covers import CDN_KINDS
from tiktok_sim.display import Incoming
from tiktok_sim.envelope import Outcome
from tiktok_sim.faults import HTML_503, OVERSIZED_BYTES, TRICKLE_BYTES, TRICKLE_SECONDS
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


def _oversized_chunks() -> Iterator[bytes]:
    chunk = 64 * 1024
    yield covers.JPEG[:4] + b"\0" * (chunk - 4)
    for _ in range(OVERSIZED_BYTES // chunk - 1):
        yield b"\0" * chunk


def _trickle(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), TRICKLE_BYTES):
        if start:
            time.sleep(TRICKLE_SECONDS)
        yield body[start : start + TRICKLE_BYTES]


def _cdn_answer(request: Request, body: bytes, reason: str | None, fault: str | None, *, etag: bool) -> Response:
    """The CDN's answer: the image (or a 304), a 403 for a refused link, or the fault asked for."""
    if reason is not None:
        return Response(f"403 Forbidden: {reason}\n", status_code=403, media_type="text/plain")
    if fault == "internal_error":
        return Response("500 Internal Server Error\n", status_code=500, media_type="text/plain")
    if fault == "offhost_redirect":
        return Response(status_code=302, headers={"Location": f"http://cdn-redirect.invalid{request.url.path}"})
    if fault == "samehost_redirect":
        return Response(status_code=302, headers={"Location": str(request.url)})
    if fault == "not_image":
        return Response(HTML_503, status_code=200, media_type="text/html")
    if fault == "wrong_magic":
        return Response(HTML_503, status_code=200, media_type="image/jpeg")
    if fault == "oversized":
        return Response(b"".join(_oversized_chunks()), media_type="image/jpeg")
    if fault == "oversized_stream":
        return StreamingResponse(_oversized_chunks(), media_type="image/jpeg")
    if fault == "trickle":
        return StreamingResponse(_trickle(body), media_type="image/jpeg")
    if not etag:
        return Response(body, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=0"})
    tag = covers.etag(body)
    headers = {"Cache-Control": "private, max-age=0", "ETag": tag}
    wanted = [value.strip() for value in request.headers.get("if-none-match", "").split(",")]
    if tag in wanted or "*" in wanted:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="image/jpeg", headers=headers)


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
        obj = name.removesuffix(".jpeg")
        with sim.lock:
            now = sim.now()
            reason = sim.signer.check(kind, obj, query.get("x-expires"), query.get("x-signature"), now)
            fault = sim.faults.draw("cdn") if reason is None else None
            delay = sim.faults.slow_seconds("cdn") if fault == "slow" else 0.0
            body = covers.image(kind, obj, sim.cover_versions.get(covers.version_key(kind, obj), 0))
            record.fault = fault
            record.error_code = reason
            record.sim_time = now
        if delay:
            time.sleep(delay)
        response = _cdn_answer(request, body, reason, fault, etag=sim.config.cdn_etag)
        record.status = response.status_code
        with sim.lock:
            sim.stats.record(record)
        return response

    return app
