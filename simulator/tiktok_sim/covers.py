"""Sign expiring CDN URLs for covers and avatars, and hold the JPEG the CDN serves.

A cover URL is ``<base>/cdn/cover/<video_id>.jpeg?x-expires=<unix seconds>&x-signature=<hex>``:
``x-expires`` is the simulated issue time plus ``cover_ttl`` (6 hours by default) and the signature
is an HMAC-SHA256 over ``"<kind>/<object>:<x-expires>"`` with a per-process random key.  The base
is the request's own base URL, so the links work on whatever host and port the client used.
``GET /cdn/...`` answers 200 with a JPEG while ``sim_now < x-expires`` and the signature
matches, 403 otherwise.  Avatar URLs (``/cdn/avatar/<open_id>_<size>.jpeg``) work the same way.

The JPEG is :data:`JPEG` with a comment segment naming the object and its cover version
(:func:`image`): real image bytes, different per video and per version, so a cover changed through
the admin API (``POST /_sim/videos/{id}/cover``, ``POST /_sim/accounts/{open_id}/avatar``) has new
content while an unchanged cover keeps its bytes even though its URL changes every 6 hours.  Each
answer carries an ``ETag`` (of the bytes) and honours ``If-None-Match`` with a 304 and no body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from urllib.parse import urlencode

CDN_KINDS: tuple[str, ...] = ("cover", "avatar")

# A 24x32 baseline JPEG (TikTok's pink-to-cyan gradient), 321 bytes.
JPEG: bytes = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1RV19i"
    "Z2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2Nj"
    "Y2NjY2NjY2P/wAARCAAgABgDASIAAhEBAxEB/8QAFgABAQEAAAAAAAAAAAAAAAAAAAQD/8QAFhABAQEAAAAAAAAAAAAAAAAAABIT"
    "/8QAGAEBAAMBAAAAAAAAAAAAAAAAAAIEBQb/xAAXEQEAAwAAAAAAAAAAAAAAAAAAEhRh/9oADAMBAAIRAxEAPwDPMzUwQjBs3dTZ"
    "imAgXdUwQpghcg427qaBTAQLuv/Z"
)


def image(kind: str, obj: str, version: int) -> bytes:
    """Return the JPEG served for ``obj`` (a video id, or ``<open_id>_<size>``) at ``version``.

    :data:`JPEG` with a COM segment after its APP0 (JFIF) segment: still a valid baseline JPEG.
    """
    comment = f"tiktok-sim {kind}/{obj} v{version}".encode()
    app0_end = 4 + int.from_bytes(JPEG[4:6], "big")
    segment = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    return JPEG[:app0_end] + segment + JPEG[app0_end:]


def etag(body: bytes) -> str:
    """Return the strong ETag of ``body``."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def version_key(kind: str, obj: str) -> str:
    """Return the key of ``obj``'s cover version: avatars change for every size at once."""
    return f"avatar/{obj.rsplit('_', 1)[0]}" if kind == "avatar" else f"{kind}/{obj}"


class UrlSigner:
    """Make and check signed, expiring CDN links."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    def signature(self, kind: str, obj: str, expires: int) -> str:
        message = f"{kind}/{obj}:{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def url(self, base_url: str, kind: str, obj: str, expires: int) -> str:
        """Return the signed URL of ``obj`` (a video id, or ``<open_id>_<size>``)."""
        query = urlencode({"x-expires": expires, "x-signature": self.signature(kind, obj, expires)})
        return f"{base_url.rstrip('/')}/cdn/{kind}/{obj}.jpeg?{query}"

    def check(self, kind: str, obj: str, expires: str | None, signature: str | None, now: float) -> str | None:
        """Return why the link is refused, or ``None`` if it may be served at ``now``."""
        if kind not in CDN_KINDS or expires is None or signature is None:
            return "missing signature"
        try:
            expires_at = int(expires)
        except ValueError:
            return "bad x-expires"
        if not hmac.compare_digest(self.signature(kind, obj, expires_at), signature):
            return "bad signature"
        if now >= expires_at:
            return "expired"
        return None
