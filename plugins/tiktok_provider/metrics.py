"""TikTok API usage as Airflow metrics (StatsD or OpenTelemetry, whatever ``[metrics]`` configures).

Every name starts with ``tiktok.``. A plain StatsD server drops tags, so a metric's dimensions are
also part of its name (``tiktok.api_calls.user_info.200``); with ``[metrics]
statsd_influxdb_enabled = True`` (or Datadog/OpenTelemetry) the same values also travel as tags
(``endpoint``, ``status``, ``table``), which statsd_exporter turns into Prometheus labels.

=====================================  =======  ===============================================
name                                   type     meaning
=====================================  =======  ===============================================
tiktok.api_calls.<endpoint>.<status>   counter  one API request and its HTTP status (``error``:
                                                no answer: timeout, connection refused)
tiktok.api_latency.<endpoint>          timer    one API request's duration (ms)
tiktok.rate_limited.<endpoint>         counter  HTTP 429 answers
tiktok.retries.<endpoint>              counter  requests sent again after a transient failure
tiktok.token_refreshes                 counter  access tokens refreshed
tiktok.rows_written.<table>            counter  warehouse rows inserted or updated
tiktok.budget_waits.<endpoint>         counter  times the client-side rate limit made a call wait
tiktok.budget_wait_time.<endpoint>     timer    how long it waited (ms)
=====================================  =======  ===============================================

The functions never raise: a metrics backend that is down must not fail a load.
"""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "tiktok"
_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")


def endpoint_name(endpoint: str) -> str:
    """``/v2/user/info/`` -> ``user_info``: a metric-safe endpoint name."""
    path = endpoint.strip("/")
    if path.startswith("v2/"):
        path = path[3:]
    return _UNSAFE.sub("_", path).strip("_") or "unknown"


def _stats() -> Any:
    from airflow.sdk.observability.stats import Stats

    return Stats


def _incr(name: str, count: int = 1, **tags: str) -> None:
    try:
        _stats().incr(name, count, tags=tags or None)
    except Exception:  # metrics are best effort
        log.debug("metric %s not sent", name, exc_info=True)


def _timing(name: str, milliseconds: float, **tags: str) -> None:
    try:
        _stats().timing(name, milliseconds, tags=tags or None)
    except Exception:
        log.debug("metric %s not sent", name, exc_info=True)


def api_call(endpoint: str, status: int | str | None, seconds: float | None = None) -> None:
    """One request to ``endpoint`` answered with HTTP ``status`` (None: no answer) in ``seconds``."""
    ep = endpoint_name(endpoint)
    st = str(status) if status is not None else "error"
    _incr(f"{PREFIX}.api_calls.{ep}.{st}", endpoint=ep, status=st)
    if status is not None and str(status) == "429":
        _incr(f"{PREFIX}.rate_limited.{ep}", endpoint=ep)
    if seconds is not None:
        _timing(f"{PREFIX}.api_latency.{ep}", seconds * 1000.0, endpoint=ep)


def retry(endpoint: str) -> None:
    """A request to ``endpoint`` is sent again after a transient failure (429, 5xx, timeout)."""
    ep = endpoint_name(endpoint)
    _incr(f"{PREFIX}.retries.{ep}", endpoint=ep)


def token_refresh() -> None:
    """An access token was refreshed."""
    _incr(f"{PREFIX}.token_refreshes")


def rows_written(table: str, rows: int) -> None:
    """``rows`` rows of warehouse ``table`` were inserted or updated."""
    if rows > 0:
        name = _UNSAFE.sub("_", table.rsplit(".", 1)[-1])
        _incr(f"{PREFIX}.rows_written.{name}", rows, table=name)


def budget_wait(endpoint: str, seconds: float) -> None:
    """The client-side rate limit held a call to ``endpoint`` back for ``seconds``."""
    ep = endpoint_name(endpoint)
    _incr(f"{PREFIX}.budget_waits.{ep}", endpoint=ep)
    _timing(f"{PREFIX}.budget_wait_time.{ep}", seconds * 1000.0, endpoint=ep)
