"""Count requests and keep a request log, for tests that assert how a client behaved.

Counters: per endpoint (requests, HTTP statuses, error codes, faults), per account (``open_id``
of the token, or of the token a grant produced), token-endpoint calls by ``grant_type`` and
outcome (``ok`` or the OAuth error code), and how many requests the rate limiter refused.
The log keeps the last ``log_size`` requests.  Neither ever holds a token, code, client secret or
code verifier: bodies are summarised (``max_count``, ``cursor``, number of ids, ``grant_type``...).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    """One served request, as shown by ``GET /_sim/requests``."""

    method: str
    path: str
    endpoint: str
    status: int = 0
    error_code: str | None = None
    open_id: str | None = None
    fields: list[str] | None = None
    body: dict[str, Any] | None = None
    fault: str | None = None
    rate_limited: bool = False
    grant_type: str | None = None
    log_id: str | None = None
    wall_time: float = field(default_factory=time.time)
    sim_time: float = 0.0
    duration_ms: float = 0.0
    seq: int = 0


class Stats:
    """Counters and a bounded request log."""

    def __init__(self, log_size: int) -> None:
        self._log: deque[RequestRecord] = deque(maxlen=log_size)
        self.reset()

    def reset(self) -> None:
        """Zero every counter and empty the log."""
        self._log.clear()
        self._seq = 0
        self._since = time.time()
        self._requests: Counter[str] = Counter()
        self._statuses: dict[str, Counter[str]] = {}
        self._errors: dict[str, Counter[str]] = {}
        self._faults: dict[str, Counter[str]] = {}
        self._accounts: dict[str, Counter[str]] = {}
        self._grants: dict[str, Counter[str]] = {}
        self._revokes: Counter[str] = Counter()
        self._rate_limited: Counter[str] = Counter()

    def record(self, record: RequestRecord) -> None:
        """Count ``record`` and append it to the log."""
        self._seq += 1
        record.seq = self._seq
        endpoint = record.endpoint
        self._requests[endpoint] += 1
        self._statuses.setdefault(endpoint, Counter())[str(record.status)] += 1
        if record.error_code and record.error_code != "ok":
            self._errors.setdefault(endpoint, Counter())[record.error_code] += 1
        if record.fault:
            self._faults.setdefault(endpoint, Counter())[record.fault] += 1
        if record.rate_limited:
            self._rate_limited[endpoint] += 1
        if record.open_id:
            self._accounts.setdefault(record.open_id, Counter())[endpoint] += 1
        outcome = record.error_code or "ok"
        if endpoint == "oauth_token":
            self._grants.setdefault(record.grant_type or "missing", Counter())[outcome] += 1
        elif endpoint == "oauth_revoke":
            self._revokes[outcome] += 1
        self._log.append(record)

    def snapshot(self) -> dict[str, Any]:
        """Return every counter as JSON-able data."""
        endpoints = {
            endpoint: {
                "requests": count,
                "statuses": dict(self._statuses.get(endpoint, {})),
                "errors": dict(self._errors.get(endpoint, {})),
                "faults": dict(self._faults.get(endpoint, {})),
                "rate_limited": self._rate_limited.get(endpoint, 0),
            }
            for endpoint, count in self._requests.items()
        }
        return {
            "since": self._since,
            "total": sum(self._requests.values()),
            "rate_limited": sum(self._rate_limited.values()),
            "endpoints": endpoints,
            "accounts": {
                open_id: {"requests": sum(counts.values()), "endpoints": dict(counts)}
                for open_id, counts in self._accounts.items()
            },
            "oauth": {
                "token": {grant: dict(outcomes) for grant, outcomes in self._grants.items()},
                "revoke": dict(self._revokes),
            },
        }

    def requests(
        self,
        *,
        since: int = 0,
        limit: int | None = None,
        endpoint: str | None = None,
        open_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Return logged requests with ``seq > since``, oldest first, optionally filtered."""
        rows = [
            asdict(record)
            for record in self._log
            if record.seq > since
            and (endpoint is None or record.endpoint == endpoint)
            and (open_id is None or record.open_id == open_id)
        ]
        return rows[-limit:] if limit else rows
