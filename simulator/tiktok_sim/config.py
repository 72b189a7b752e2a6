"""Define every simulator setting with its CLI flag, ``TIKTOK_SIM_*`` variable and default.

Each option ``name`` is the CLI flag ``--name`` (underscores become dashes) and the environment
variable ``TIKTOK_SIM_NAME``; a flag beats the variable, the variable beats the default.
Options marked ``runtime`` can also be changed on a running simulator with
``POST /_sim/config`` (see :mod:`tiktok_sim.admin`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ENV_PREFIX = "TIKTOK_SIM_"
DEFAULT_CLIENT_KEY = "sim-client-key"
# Generated videos are spread over the four years before this instant (2026-01-01T00:00:00Z).
# It is fixed, not "now", so that the same seed gives the same data on any day.
DEFAULT_EPOCH = 1767225600
RATE_SCOPES = ("app", "token")


def parse_time(value: str | float | int) -> float:
    """Accept Unix seconds or an ISO-8601 timestamp (naive means UTC)."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_bool(value: str | bool) -> bool:
    """Read a boolean from a flag or environment value."""
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class Option:
    """One setting: how it is parsed, checked and documented."""

    name: str
    parse: Callable[[Any], Any]
    help: str
    runtime: bool = False
    check: Callable[[Any], bool] = lambda _value: True
    secret: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _probability(value: float) -> bool:
    return 0.0 <= value <= 1.0


def _optional_time(value: Any) -> float | None:
    return None if value in (None, "") else parse_time(value)


def _optional_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


OPTIONS: tuple[Option, ...] = (
    Option("host", str, "Interface to bind; keep the loopback default, the admin API has no auth."),
    Option("port", int, "Port to listen on; 0 picks a free one (printed on start).", check=lambda v: v >= 0),
    Option("seed", int, "Seed for the population, faults and page imperfections."),
    Option("accounts", int, "Accounts created at start.", check=lambda v: v >= 0),
    Option(
        "videos",
        int,
        "Videos of account 0; account i gets videos // (i + 1).",
        check=lambda v: v >= 0,
    ),
    Option("client_key", str, "The app's client key.", check=lambda v: bool(v)),
    Option(
        "client_secret",
        _optional_str,
        "The app's client secret; random (and never printed) when not given.",
        secret=True,
    ),
    Option("access_ttl", int, "Access token lifetime, seconds.", runtime=True, check=lambda v: v > 0),
    Option("refresh_ttl", int, "Refresh token lifetime, seconds.", runtime=True, check=lambda v: v > 0),
    Option("cover_ttl", int, "Cover/avatar URL lifetime, seconds.", runtime=True, check=lambda v: v > 0),
    Option(
        "cdn_etag",
        parse_bool,
        "The CDN sends an ETag and answers If-None-Match with 304 (false: neither).",
        runtime=True,
    ),
    Option("code_ttl", int, "Authorization code lifetime, seconds.", runtime=True, check=lambda v: v > 0),
    Option("rate_limit", int, "Requests allowed per window and endpoint.", runtime=True, check=lambda v: v > 0),
    Option("rate_window", float, "Sliding window, real seconds.", runtime=True, check=lambda v: v > 0),
    Option(
        "rate_scope",
        str,
        "Rate-limit budget per 'app' or per 'token'.",
        runtime=True,
        check=lambda v: v in RATE_SCOPES,
    ),
    Option(
        "rate_retry_after",
        parse_bool,
        "Send Retry-After with 429s (the real API documents none).",
        runtime=True,
    ),
    Option(
        "page_short_prob",
        float,
        "Probability that a video/list page is short.",
        runtime=True,
        check=_probability,
    ),
    Option(
        "page_empty_prob",
        float,
        "Probability of an empty video/list page with has_more true.",
        runtime=True,
        check=_probability,
    ),
    Option(
        "page_duplicate_prob",
        float,
        "Probability that the next page repeats videos of this one.",
        runtime=True,
        check=_probability,
    ),
    Option(
        "oauth_error_status",
        int,
        "HTTP status of OAuth error bodies (TikTok can answer them with 200).",
        runtime=True,
        check=lambda v: 200 <= v <= 599,
    ),
    Option("epoch", parse_time, "Generated videos end at this time (Unix seconds or ISO-8601)."),
    Option("start_time", _optional_time, "Start the simulated clock at this time instead of now."),
    Option("freeze_clock", parse_bool, "Start with the simulated clock frozen."),
    Option("log_size", int, "Entries kept in the request log.", check=lambda v: v > 0),
    Option("access_log", parse_bool, "Print uvicorn's access log."),
)
OPTIONS_BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}
RUNTIME_OPTIONS: frozenset[str] = frozenset(option.name for option in OPTIONS if option.runtime)


@dataclass
class SimConfig:
    """All settings of one simulator; see :data:`OPTIONS` for their meaning."""

    host: str = "127.0.0.1"
    port: int = 8765
    seed: int = 42
    accounts: int = 3
    videos: int = 1000
    client_key: str = DEFAULT_CLIENT_KEY
    client_secret: str | None = field(default=None, repr=False)
    access_ttl: int = 7200
    refresh_ttl: int = 15552000
    cover_ttl: int = 21600
    cdn_etag: bool = True
    code_ttl: int = 600
    rate_limit: int = 600
    rate_window: float = 60.0
    rate_scope: str = "app"
    rate_retry_after: bool = False
    page_short_prob: float = 0.0
    page_empty_prob: float = 0.0
    page_duplicate_prob: float = 0.0
    oauth_error_status: int = 200
    epoch: float = float(DEFAULT_EPOCH)
    start_time: float | None = None
    freeze_clock: bool = False
    log_size: int = 100_000
    access_log: bool = False

    def update(self, values: dict[str, Any], *, runtime_only: bool = False) -> dict[str, Any]:
        """Validate and apply ``values``; return what changed.

        :raises ValueError: on an unknown or (with ``runtime_only``) fixed option, or a bad value.
        """
        parsed: dict[str, Any] = {}
        for name, raw in values.items():
            option = OPTIONS_BY_NAME.get(name)
            if option is None:
                raise ValueError(f"unknown option {name!r}")
            if runtime_only and not option.runtime:
                raise ValueError(f"option {name!r} cannot be changed on a running simulator")
            try:
                value = option.parse(raw)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"bad value for {name!r}: {exc}") from None
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"bad value for {name!r}: not finite")
            if value is not None and not option.check(value):
                raise ValueError(f"bad value for {name!r}: {raw!r}")
            parsed[name] = value
        for name, value in parsed.items():
            setattr(self, name, value)
        return parsed

    def public(self) -> dict[str, Any]:
        """Return the settings as JSON-able data, without the client secret."""
        data = dataclasses.asdict(self)
        data.pop("client_secret")
        return data
