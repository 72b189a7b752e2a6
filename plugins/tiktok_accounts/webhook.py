"""Check and read TikTok's webhooks (``TikTok-Signature: t=<unix seconds>,s=<hex>``).

``s`` is the HMAC-SHA256, keyed with the app's client secret, of ``"<t>." + raw body``. A missing or
malformed header, a signature that does not match (compared in constant time), or a timestamp more
than five minutes from now (a replay) is rejected with 401 before the body is even parsed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SIGNATURE_HEADER = "TikTok-Signature"
MAX_SKEW_SECONDS = 300
MAX_BODY_BYTES = 64 * 1024
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class WebhookRejected(Exception):
    """The delivery is refused with ``status``; nothing was changed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class WebhookEvent:
    client_key: str | None
    event: str
    open_id: str | None
    create_time: datetime | None
    content: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> int | None:
        value = self.content.get("reason")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


def verify_signature(header: str | None, body: bytes, secret: str, *, now: float) -> int:
    """Return the delivery's timestamp if ``header`` signs ``body``; raise :class:`WebhookRejected`."""
    if not secret:
        raise WebhookRejected(401, "no client secret is configured to check signatures with")
    if not header:
        raise WebhookRejected(401, f"the {SIGNATURE_HEADER} header is missing")
    timestamp: str | None = None
    signatures: list[str] = []
    for element in header.split(","):
        prefix, _, value = element.strip().partition("=")
        if prefix == "t":
            timestamp = value
        elif prefix == "s":
            signatures.append(value)
    if not timestamp or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise WebhookRejected(401, f"the {SIGNATURE_HEADER} header has no valid timestamp")
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(_HEX64.match(s) and hmac.compare_digest(expected, s.lower()) for s in signatures):
        raise WebhookRejected(401, "the signature does not match the body")
    if abs(now - int(timestamp)) > MAX_SKEW_SECONDS:
        raise WebhookRejected(401, f"the signature's timestamp is more than {MAX_SKEW_SECONDS} s from now (a replay?)")
    return int(timestamp)


def parse_event(body: bytes) -> WebhookEvent:
    """Read a (verified) delivery; raise :class:`WebhookRejected` (400) if it is not one."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise WebhookRejected(400, "the body is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("event"), str):
        raise WebhookRejected(400, "the body has no event")
    raw_content = payload.get("content")
    content: Any = {}
    if isinstance(raw_content, str) and raw_content.strip():
        try:
            content = json.loads(raw_content)
        except ValueError:
            content = {}
    elif isinstance(raw_content, dict):
        content = raw_content
    created = payload.get("create_time")
    create_time = None
    if isinstance(created, int) and not isinstance(created, bool) and 0 < created < 253_402_300_800:
        create_time = datetime.fromtimestamp(created, UTC)
    open_id = payload.get("user_openid")
    client_key = payload.get("client_key")
    return WebhookEvent(
        client_key=client_key if isinstance(client_key, str) else None,
        event=payload["event"],
        open_id=open_id if isinstance(open_id, str) and open_id else None,
        create_time=create_time,
        content=content if isinstance(content, dict) else {},
    )
