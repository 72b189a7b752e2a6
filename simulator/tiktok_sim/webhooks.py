"""Send TikTok's webhooks: ``POST /_sim/webhooks/send`` delivers one, signed as TikTok signs them.

TikTok POSTs JSON (``client_key``, ``event``, ``create_time``, ``user_openid``, ``content`` -- a JSON
*string*) with the header ``TikTok-Signature: t=<unix seconds>,s=<hex>``, where ``s`` is the
HMAC-SHA256, keyed with the app's client secret, of ``"<t>." + raw body``.

The admin call takes ``{"url", "open_id", "event": "authorization.removed", "reason": 1,
"signature": "valid" | "bad" | "missing", "timestamp_offset": 0, "create_time": null}``: ``bad``
signs with a wrong secret, ``missing`` sends no header, ``timestamp_offset`` (seconds, may be
negative) shifts ``t`` to make a stale delivery. Times are wall-clock (a receiver compares ``t``
with its own clock), not the simulated clock. It answers ``{"status", "body", "payload"}``: what
the receiver answered, and what was sent. Sending twice is how a redelivery is simulated.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, Literal

import requests
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from tiktok_sim.state import Simulator

SIGNATURE_HEADER = "TikTok-Signature"
EVENTS = ("authorization.removed", "video.upload.failed", "video.publish.completed")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return the hex HMAC-SHA256 TikTok puts in ``s=``."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """Return the ``TikTok-Signature`` header value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},s={sign(secret, timestamp, body)}"


class SendWebhook(BaseModel):
    url: str
    open_id: str
    event: str = "authorization.removed"
    reason: int = Field(1, ge=0, le=5)
    signature: Literal["valid", "bad", "missing"] = "valid"
    timestamp_offset: int = 0
    create_time: int | None = None


def build_webhook_router(sim: Simulator) -> APIRouter:
    """Return ``POST /_sim/webhooks/send`` bound to ``sim``."""
    router = APIRouter(prefix="/_sim", tags=["simulator admin"])

    @router.post("/webhooks/send")
    def send(body: SendWebhook) -> dict[str, Any]:
        if body.event not in EVENTS:
            raise HTTPException(400, f"unknown event {body.event!r}; known: {', '.join(EVENTS)}")
        if not body.url.startswith(("http://", "https://")):
            raise HTTPException(400, "url must be an http(s) URL")
        now = int(time.time())
        content = {"reason": body.reason} if body.event == "authorization.removed" else {}
        with sim.lock:
            client_key, secret = sim.config.client_key, sim.client_secret
        payload = {
            "client_key": client_key,
            "event": body.event,
            "create_time": body.create_time if body.create_time is not None else now,
            "user_openid": body.open_id,
            "content": json.dumps(content),
        }
        raw = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        timestamp = now + body.timestamp_offset
        if body.signature == "valid":
            headers[SIGNATURE_HEADER] = signature_header(secret, timestamp, raw)
        elif body.signature == "bad":
            headers[SIGNATURE_HEADER] = signature_header(secret + "-wrong", timestamp, raw)
        try:
            answer = requests.post(body.url, data=raw, headers=headers, timeout=30, allow_redirects=False)
        except requests.RequestException as exc:
            raise HTTPException(502, f"delivery to {body.url} failed: {type(exc).__name__}") from None
        return {"status": answer.status_code, "body": answer.text[:2000], "payload": payload}

    return router
