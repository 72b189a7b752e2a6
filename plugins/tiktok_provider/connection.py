"""The ``tiktok`` Airflow connection, read into :class:`TikTokConnectionConfig`: host, app credentials, tuning.

Everything environment-specific the provider needs comes from here; :func:`mask` is how the
provider hides a secret from Airflow's logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "https://open.tiktokapis.com"
#: The Postgres connection a caller's token store may use, unless the extra names another one.
DEFAULT_WAREHOUSE_CONN_ID = "tiktok_warehouse"


def mask(value: str | None) -> None:
    """Have Airflow mask ``value`` in every log line from now on (a secret: token, key, code)."""
    if value:
        from airflow.sdk.log import mask_secret

        mask_secret(value)


def _host_list(value: Any) -> list[str]:
    """Read a list of host names given as a JSON list or a comma-separated string."""
    if not value:
        return []
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(item).strip().lower() for item in items if str(item).strip()]


@dataclass(frozen=True)
class TikTokConnectionConfig:
    """Everything environment-specific, read from the Airflow connection."""

    base_url: str
    client_key: str
    client_secret: str = field(repr=False)
    token_encryption_key: str | None = field(repr=False, default=None)
    #: Read by whoever builds the token store (the provider itself never opens a database).
    warehouse_conn_id: str = DEFAULT_WAREHOUSE_CONN_ID
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    rate_limit_per_minute: int = 540
    rate_limit_window_seconds: float = 60.0
    max_attempts: int = 6
    max_backoff_seconds: float = 60.0
    refresh_margin_seconds: float = 300.0
    #: How long other workers wait for this one's token refresh of an account (its HTTP attempts
    #: stop in time to end within it); also the longest a worker that died mid-refresh blocks them.
    refresh_lease_seconds: float = 120.0
    #: Hosts (besides loopback) that may get bearer tokens over plain http: a simulator in its own
    #: container, never a real API host.
    insecure_http_hosts: frozenset[str] = frozenset()
    #: Where every process's requests draw from one budget: ``postgres``, ``redis`` or ``process``
    #: (each process alone); see :mod:`tiktok_provider.budget`.
    rate_budget: str = "postgres"
    rate_budget_conn_id: str = DEFAULT_WAREHOUSE_CONN_ID
    rate_budget_redis_url: str | None = field(repr=False, default=None)
    #: Share of each window a ``bulk`` caller (a whole-history backfill) leaves free for the others.
    rate_budget_reserve: float = 0.2
    #: Share of the limit one process paces at while the budget's store is unreachable.
    rate_budget_fallback_share: float = 0.125
    #: One INFO line per request on the ``tiktok_provider.requests`` logger (see the client).
    request_log: bool = True
    #: The Airflow connection this was read from (named in errors' advice).
    conn_id: str = "tiktok_default"

    @classmethod
    def from_connection(cls, conn: Any) -> TikTokConnectionConfig:
        extra = conn.extra_dejson or {}
        host = (conn.host or DEFAULT_BASE_URL).rstrip("/")
        if "://" not in host:
            host = f"https://{host}"
        if conn.port and urlsplit(host).port is None:
            host = f"{host}:{conn.port}"

        def num(key: str, default: float, typ: type = float) -> Any:
            value = extra.get(key)
            return default if value in (None, "") else typ(value)

        return cls(
            base_url=host,
            client_key=conn.login or "",
            client_secret=conn.password or "",
            token_encryption_key=extra.get("token_encryption_key") or None,
            warehouse_conn_id=extra.get("warehouse_conn_id") or DEFAULT_WAREHOUSE_CONN_ID,
            connect_timeout=num("connect_timeout", 10.0),
            read_timeout=num("read_timeout", 30.0),
            rate_limit_per_minute=num("rate_limit_per_minute", 540, int),
            rate_limit_window_seconds=num("rate_limit_window_seconds", 60.0),
            max_attempts=num("max_attempts", 6, int),
            max_backoff_seconds=num("max_backoff_seconds", 60.0),
            refresh_margin_seconds=num("refresh_margin_seconds", 300.0),
            refresh_lease_seconds=num("refresh_lease_seconds", 120.0),
            insecure_http_hosts=frozenset(_host_list(extra.get("insecure_http_hosts"))),
            rate_budget=str(extra.get("rate_budget") or "postgres"),
            rate_budget_conn_id=(
                extra.get("rate_budget_conn_id") or extra.get("warehouse_conn_id") or DEFAULT_WAREHOUSE_CONN_ID
            ),
            rate_budget_redis_url=extra.get("rate_budget_redis_url") or extra.get("rate_budget_redis_conn_id") or None,
            rate_budget_reserve=num("rate_budget_reserve", 0.2),
            rate_budget_fallback_share=num("rate_budget_fallback_share", 0.125),
            request_log=str(extra.get("request_log", "true")).strip().lower() not in ("false", "0", "no", "off"),
            conn_id=getattr(conn, "conn_id", None) or "tiktok_default",
        )
