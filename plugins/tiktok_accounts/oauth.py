"""The browser half of TikTok's OAuth: state, PKCE, and the authorize page's address.

The PKCE challenge encoding lives here and nowhere else: RFC 7636 S256 (base64url of the SHA-256,
no padding) by default -- what the simulator checks -- or the hex SHA-256 that TikTok's desktop
guide describes (``[tiktok_accounts] pkce_challenge_encoding = hex``).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence
from urllib.parse import urlencode, urlsplit

from tiktok_provider.fields import USER_FIELDS_BY_SCOPE, VIDEO_SCOPE

#: Every scope the Display API knows, in the order the connect form offers them.
SCOPES: tuple[str, ...] = (*USER_FIELDS_BY_SCOPE, VIDEO_SCOPE)
#: Without it TikTok cannot even tell us who connected.
REQUIRED_SCOPE = "user.info.basic"
SCOPE_HELP = {
    "user.info.basic": "name and avatar (required)",
    "user.info.profile": "username, bio, verified badge",
    "user.info.stats": "follower, like and video counts (the growth chart)",
    "video.list": "videos and their statistics",
}


def new_state() -> str:
    """A fresh, unguessable OAuth ``state`` (256 bits)."""
    return secrets.token_urlsafe(32)


def new_code_verifier() -> str:
    """A fresh PKCE ``code_verifier``: 86 characters of RFC 7636's unreserved alphabet."""
    return secrets.token_urlsafe(64)


def code_challenge(verifier: str, encoding: str = "base64url") -> str:
    """The S256 ``code_challenge`` of ``verifier``."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    if encoding == "hex":
        return digest.hex()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def chosen_scopes(requested: Sequence[str]) -> tuple[str, ...]:
    """Known scopes from a form, in canonical order, always with ``user.info.basic``."""
    wanted = set(requested) | {REQUIRED_SCOPE}
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}")
    return tuple(scope for scope in SCOPES if scope in wanted)


def authorize_redirect(
    authorize_url: str,
    *,
    client_key: str,
    scopes: Sequence[str],
    redirect_uri: str,
    state: str,
    challenge: str,
) -> str:
    """The address of TikTok's consent page for one connect attempt."""
    query = urlencode(
        {
            "client_key": client_key,
            "scope": ",".join(scopes),
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    separator = "&" if urlsplit(authorize_url).query else "?"
    return f"{authorize_url}{separator}{query}"
