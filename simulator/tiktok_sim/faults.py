"""Inject failures and bad data into chosen endpoints, reproducibly.

Each endpoint (``user_info``, ``video_list``, ``video_query``, ``oauth_token``, ``oauth_revoke``)
has a :class:`FaultPlan`: probabilities per fault kind, drawn from an RNG seeded from ``--seed``
(separate from the population's, so runs are reproducible), and a queue of deterministic faults
that the next requests to that endpoint get, one each, before any probability is drawn (queue
``pass`` to let a request through untouched: ``[("pass", 3), ("missing_data", 1)]`` breaks the
fourth request).  A queued
fault is used up by the next request even where it changes nothing (a bad-data fault on a request
that fails validation, ``nul_bytes`` when no caption field was asked for).

Kinds and what the client sees:

- ``internal_error``: 500 with ``internal_error`` in the envelope (``server_error`` for OAuth).
- ``html_503``: 503 with an nginx-style ``text/html`` page.
- ``rate_limit``: 429 ``rate_limit_exceeded`` (``temporarily_unavailable`` for OAuth).
- ``slow``: the normal answer after ``slow_seconds`` of real time.
- ``truncated``: status 200, the normal JSON body cut in half.
- ``unknown_error_code``: status 200, ``error.code`` = ``sim_unknown_error``, empty ``data``.
- ``missing_data``: status 200, ``ok`` envelope but no ``data`` (OAuth: no ``access_token``).
- ``empty_data`` (Display API): status 200, ``ok`` envelope and ``"data": {}`` -- no ``videos``,
  ``has_more``, ``cursor`` or ``user`` at all.
- ``wrong_types``: integers sent as strings (OAuth: ``expires_in``/``refresh_expires_in``).
- ``int64_overflow``: ``view_count`` (user: ``follower_count``, ``likes_count``) above 2**63.
- ``nul_bytes``: NUL characters in titles/descriptions (user: display name and bio).
- ``long_strings``: 10,000-character titles/descriptions (user: display name and bio).
- ``non_numeric_id``: video ids like ``id_7234...``.
- ``no_videos`` (``video_list``, ``video_query``): a well-formed answer without any video --
  ``"videos": []`` (and ``"has_more": false`` on a list page): the listing ends early, or the
  query leaves out every id, though the videos are live.
- ``stuck_cursor`` (``video_list``): the response cursor equals the request's, ``has_more`` true.
- ``endless_has_more`` (``video_list``): an empty page, ``has_more`` true and a cursor one second
  lower than the request's -- forever, for as long as the fault applies.

Bad-data kinds only touch fields that were requested; they leave error responses alone.

The CDN (endpoint ``cdn``: covers and avatars) has its own kinds, besides ``internal_error`` and
``slow``; each applies to a link that is otherwise valid (an expired or forged link stays a 403):

- ``oversized``: 200 ``image/jpeg`` of :data:`OVERSIZED_BYTES` (6 MiB) starting with the JPEG
  magic, with its ``Content-Length``.
- ``oversized_stream``: the same bytes streamed without a ``Content-Length``.
- ``not_image``: 200 ``text/html`` (an error page served as the image).
- ``wrong_magic``: 200 with ``Content-Type: image/jpeg`` but an HTML body.
- ``offhost_redirect``: 302 to another host (``http://cdn-redirect.invalid/...``).
- ``samehost_redirect``: 302 to the same URL on the same host (the next request is served as usual).
- ``trickle``: 200 ``image/jpeg``, the real image streamed without a ``Content-Length``, a few bytes
  every :data:`TRICKLE_SECONDS` (each gap well under a read timeout; the whole takes ~10 s).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tiktok_sim import DISPLAY_ENDPOINTS, ENDPOINTS

ANSWER_KINDS: tuple[str, ...] = ("internal_error", "html_503", "rate_limit")
BODY_KINDS: tuple[str, ...] = ("truncated", "unknown_error_code", "missing_data")
DATA_KINDS: tuple[str, ...] = ("wrong_types", "int64_overflow", "nul_bytes", "long_strings", "empty_data")
VIDEO_KINDS: tuple[str, ...] = ("non_numeric_id", "no_videos")
LIST_KINDS: tuple[str, ...] = ("stuck_cursor", "endless_has_more")
CDN_FAULT_KINDS: tuple[str, ...] = (
    "oversized",
    "oversized_stream",
    "not_image",
    "wrong_magic",
    "offhost_redirect",
    "samehost_redirect",
    "trickle",
)
#: The gap between the pieces of a ``trickle`` answer, and the size of each piece.
TRICKLE_SECONDS = 0.25
TRICKLE_BYTES = 8
PASS = "pass"
ALL_KINDS: tuple[str, ...] = (
    PASS,
    *ANSWER_KINDS,
    "slow",
    *BODY_KINDS,
    *DATA_KINDS,
    *VIDEO_KINDS,
    *LIST_KINDS,
    *CDN_FAULT_KINDS,
)
OVERSIZED_BYTES = 6 * 1024 * 1024
UNKNOWN_ERROR_CODE = "sim_unknown_error"
OVERFLOW_VALUE = 2**63 + 12345
LONG_STRING_LENGTH = 10_000
HTML_503 = (
    "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    "<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def kinds_for(endpoint: str) -> tuple[str, ...]:
    """Return the fault kinds that make sense for ``endpoint``."""
    if endpoint == "cdn":
        return (PASS, "internal_error", "slow", *CDN_FAULT_KINDS)
    kinds = (PASS, *ANSWER_KINDS, "slow", *BODY_KINDS)
    if endpoint in DISPLAY_ENDPOINTS:
        kinds += DATA_KINDS
    if endpoint in ("video_list", "video_query"):
        kinds += VIDEO_KINDS
    if endpoint == "video_list":
        kinds += LIST_KINDS
    if endpoint == "oauth_token":
        kinds += ("wrong_types",)
    return kinds


@dataclass
class FaultPlan:
    """The faults configured for one endpoint."""

    probabilities: dict[str, float] = field(default_factory=dict)
    queue: deque[str] = field(default_factory=deque)
    slow_seconds: float = 2.0

    def describe(self) -> dict[str, Any]:
        return {
            "probabilities": dict(self.probabilities),
            "next": list(self.queue),
            "slow_seconds": self.slow_seconds,
        }


class FaultInjector:
    """Decide, per request, which fault (if any) an endpoint answers with."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"tiktok-sim:{seed}:faults")
        self.plans: dict[str, FaultPlan] = {endpoint: FaultPlan() for endpoint in ENDPOINTS}

    def configure(
        self,
        endpoint: str,
        *,
        probabilities: dict[str, float] | None = None,
        next_faults: list[tuple[str, int]] | None = None,
        slow_seconds: float | None = None,
    ) -> FaultPlan:
        """Replace the probabilities, append to the queue and/or set the delay of ``endpoint``.

        :raises ValueError: on an unknown endpoint or kind, or probabilities outside [0, 1].
        """
        if endpoint not in self.plans:
            raise ValueError(f"unknown endpoint {endpoint!r}; known: {', '.join(ENDPOINTS)}")
        allowed = kinds_for(endpoint)
        wanted = list(probabilities or {}) + [kind for kind, _ in next_faults or []]
        bad = [kind for kind in wanted if kind not in allowed]
        if bad:
            raise ValueError(f"fault(s) {bad} do not apply to {endpoint}; allowed: {', '.join(allowed)}")
        if probabilities is not None and (
            any(not 0.0 <= p <= 1.0 for p in probabilities.values()) or sum(probabilities.values()) > 1.0
        ):
            raise ValueError("fault probabilities must be within [0, 1] and sum to at most 1")
        if any(count < 0 for _, count in next_faults or []):
            raise ValueError("a fault count must not be negative")
        if slow_seconds is not None and not 0.0 <= slow_seconds <= 300.0:
            raise ValueError("slow_seconds must be within [0, 300]")
        plan = self.plans[endpoint]
        if probabilities is not None:
            plan.probabilities = {kind: p for kind, p in probabilities.items() if p > 0 and kind != PASS}
        for kind, count in next_faults or []:
            plan.queue.extend([kind] * count)
        if slow_seconds is not None:
            plan.slow_seconds = slow_seconds
        return plan

    def clear(self, endpoint: str | None = None) -> None:
        """Remove every fault of ``endpoint`` (all endpoints when ``None``)."""
        for name in [endpoint] if endpoint else list(self.plans):
            if name not in self.plans:
                raise ValueError(f"unknown endpoint {name!r}")
            self.plans[name] = FaultPlan()

    def draw(self, endpoint: str) -> str | None:
        """Return the fault for the next request to ``endpoint``, or ``None``."""
        plan = self.plans[endpoint]
        if plan.queue:
            kind = plan.queue.popleft()
            return None if kind == PASS else kind
        if not plan.probabilities:
            return None
        roll = self._rng.random()
        cumulative = 0.0
        for kind in sorted(plan.probabilities):
            cumulative += plan.probabilities[kind]
            if roll < cumulative:
                return kind
        return None

    def slow_seconds(self, endpoint: str) -> float:
        return self.plans[endpoint].slow_seconds

    def describe(self) -> dict[str, Any]:
        return {endpoint: plan.describe() for endpoint, plan in self.plans.items()}


def _nul(text: str) -> str:
    middle = len(text) // 2
    return text[:middle] + "\x00" + text[middle:]


def _long(prefix: str) -> str:
    pattern = f"{prefix} 🔥 this caption goes on and on "
    return (pattern * (LONG_STRING_LENGTH // len(pattern) + 1))[:LONG_STRING_LENGTH]


def _mutate_record(kind: str, record: dict[str, Any], texts: tuple[str, ...], big: tuple[str, ...]) -> None:
    if kind == "wrong_types":
        for name, value in record.items():
            if isinstance(value, int) and not isinstance(value, bool):
                record[name] = str(value)
    elif kind == "int64_overflow":
        for name in big:
            if name in record:
                record[name] = OVERFLOW_VALUE
    elif kind == "nul_bytes":
        for name in texts:
            if name in record:
                record[name] = _nul(record[name])
    elif kind == "long_strings":
        for name in texts:
            if name in record:
                record[name] = _long(name)
    elif kind == "non_numeric_id" and "id" in record:
        record["id"] = f"id_{record['id']}"


def corrupt_display(kind: str, payload: dict[str, Any]) -> None:
    """Apply a bad-data fault to a successful Display API body, in place."""
    if kind == "unknown_error_code":
        payload["data"] = {}
        payload["error"]["code"] = UNKNOWN_ERROR_CODE
        payload["error"]["message"] = "Simulated error code that no client knows."
        return
    if kind == "missing_data":
        payload.pop("data", None)
        return
    if kind == "empty_data":
        payload["data"] = {}
        return
    data = payload.get("data", {})
    if kind == "no_videos":
        data["videos"] = []
        if "has_more" in data:
            data["has_more"] = False
        return
    if "user" in data:
        _mutate_record(kind, data["user"], ("display_name", "bio_description"), ("follower_count", "likes_count"))
    for video in data.get("videos", []):
        _mutate_record(kind, video, ("title", "video_description"), ("view_count",))
    if kind == "wrong_types" and isinstance(data.get("cursor"), int):
        data["cursor"] = str(data["cursor"])


def corrupt_oauth(kind: str, payload: dict[str, Any]) -> None:
    """Apply a bad-data fault to a successful OAuth body, in place."""
    if kind == "unknown_error_code":
        log_id = payload.get("log_id", "")
        payload.clear()
        payload.update(
            error=UNKNOWN_ERROR_CODE, error_description="Simulated error code that no client knows.", log_id=log_id
        )
    elif kind == "missing_data":
        payload.pop("access_token", None)
    elif kind == "wrong_types":
        for name in ("expires_in", "refresh_expires_in"):
            if isinstance(payload.get(name), int):
                payload[name] = str(payload[name])
