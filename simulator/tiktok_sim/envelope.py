"""Build log ids and the bodies every Display API and OAuth response is made of.

Every Display API response -- success included -- carries
``"error": {"code", "message", "log_id"}``; success is ``code == "ok"``.  Errors also carry an
empty ``data`` object.  OAuth answers are flat and errors use their own shape,
``{"error", "error_description", "log_id"}``.  The log id (``YYYYMMDDhhmmss`` of the simulated
UTC time + 20 upper-case hex chars) is also sent as the ``x-tt-logid`` header.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ERROR_STATUS: dict[str, int] = {
    "access_token_invalid": 401,
    "scope_not_authorized": 401,
    "scope_permission_missed": 400,
    "invalid_params": 400,
    "rate_limit_exceeded": 429,
    "internal_error": 500,
}
ERROR_MESSAGES: dict[str, str] = {
    "access_token_invalid": "The access token is invalid or not found in the request.",
    "scope_not_authorized": "The user did not authorize the scope required for completing this request.",
    "scope_permission_missed": "The access token does not have the scope required for this request.",
    "invalid_params": "The request parameters are invalid.",
    "rate_limit_exceeded": "The API rate limit was exceeded. Please try again later.",
    "internal_error": "An internal error occurred. Please try again later.",
}
LOG_ID_HEADER = "x-tt-logid"
JSON_TYPE = "application/json; charset=utf-8"


def new_log_id(now: float) -> str:
    """Return a log id stamped with simulated time ``now``."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d%H%M%S")
    return stamp + secrets.token_hex(10).upper()


def dumps(payload: Any) -> bytes:
    """Encode JSON the way the API does: UTF-8, no ASCII escaping, compact."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass
class Outcome:
    """A response before it becomes an HTTP response."""

    status: int
    log_id: str
    payload: dict[str, Any] | None = None
    raw: bytes | None = None
    media_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    truncate: bool = False
    error_code: str | None = None
    send_log_id: bool = True

    def body(self) -> bytes:
        data = self.raw if self.raw is not None else dumps(self.payload)
        return data[: len(data) // 2] if self.truncate else data

    def all_headers(self) -> dict[str, str]:
        if not self.send_log_id:
            return dict(self.headers)
        return {LOG_ID_HEADER: self.log_id, **self.headers}


def ok(data: dict[str, Any], log_id: str) -> Outcome:
    """Return a successful Display API answer."""
    payload = {"data": data, "error": {"code": "ok", "message": "", "log_id": log_id}}
    return Outcome(200, log_id, payload, error_code="ok")


def error(code: str, log_id: str, detail: str | None = None, status: int | None = None) -> Outcome:
    """Return a Display API error answer with the envelope and an empty ``data``."""
    message = ERROR_MESSAGES.get(code, "Unknown error.")
    if detail:
        message = f"{message} {detail}"
    payload = {"data": {}, "error": {"code": code, "message": message, "log_id": log_id}}
    return Outcome(status or ERROR_STATUS.get(code, 400), log_id, payload, error_code=code)


def oauth_error(code: str, description: str, log_id: str, status: int) -> Outcome:
    """Return an OAuth error in OAuth's own shape."""
    payload = {"error": code, "error_description": description, "log_id": log_id}
    return Outcome(status, log_id, payload, error_code=code)
