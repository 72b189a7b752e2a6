"""Provider metadata: registers the ``tiktok`` connection type and its form in the Airflow UI."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-tiktok-display",
        "name": "TikTok Display API",
        "description": "A hook for the TikTok Display API v2 (user info, videos, OAuth), for many accounts.",
        "versions": ["0.1.0"],
        "integrations": [
            {
                "integration-name": "TikTok Display API",
                "external-doc-url": "https://developers.tiktok.com/doc/display-api-overview",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "TikTok Display API",
                "python-modules": ["tiktok_provider.hooks.tiktok"],
            }
        ],
        "extra-links": [
            "tiktok_provider.links.RunbookLink",
            "tiktok_provider.links.AccountLink",
            "tiktok_provider.links.TikTokProfileLink",
        ],
        "notifications": ["tiktok_provider.notifications.tiktok.TikTokAlertNotifier"],
        "connection-types": [
            {
                "hook-class-name": "tiktok_provider.hooks.tiktok.TikTokDisplayHook",
                "hook-name": "TikTok Display API",
                "connection-type": "tiktok",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "host": "API base URL",
                        "login": "Client key",
                        "password": "Client secret",
                    },
                    "placeholders": {
                        "host": "https://open.tiktokapis.com",
                        "login": "the app's client key from developers.tiktok.com",
                        "password": "the app's client secret",
                    },
                },
                "conn-fields": {
                    "token_encryption_key": {
                        "label": "Token encryption key",
                        "description": "Fernet key that encrypts access and refresh tokens in the warehouse. "
                        'Generate one: python -c "from cryptography.fernet import Fernet; '
                        'print(Fernet.generate_key().decode())". Losing it means reconnecting every account.',
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "warehouse_conn_id": {
                        "label": "Warehouse connection id",
                        "description": "Postgres connection of the caller's token store (default tiktok_warehouse).",
                        "schema": {"type": ["string", "null"], "default": "tiktok_warehouse"},
                    },
                    "connect_timeout": {
                        "label": "Connect timeout (s)",
                        "schema": {"type": ["number", "null"], "default": 10},
                    },
                    "read_timeout": {
                        "label": "Read timeout (s)",
                        "schema": {"type": ["number", "null"], "default": 30},
                    },
                    "rate_limit_per_minute": {
                        "label": "Client-side rate limit (requests per endpoint per window)",
                        "description": "TikTok allows 600 per minute per endpoint; stay below it.",
                        "schema": {"type": ["integer", "null"], "default": 540},
                    },
                    "rate_limit_window_seconds": {
                        "label": "Rate-limit window (s)",
                        "schema": {"type": ["number", "null"], "default": 60},
                    },
                    "insecure_http_hosts": {
                        "label": "Hosts allowed over plain http",
                        "description": "Comma-separated host names (besides loopback) that may get bearer tokens "
                        "over http: only a simulator's, e.g. tiktok-sim in docker-compose. Empty for TikTok.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "request_log": {
                        "label": "Log one line per request",
                        "description": "One INFO line per request to TikTok in the task log (method, endpoint, "
                        "cursor or number of ids, HTTP status, log_id, ms, attempt; never a token). false: off.",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                    "max_attempts": {
                        "label": "Attempts per request (429, 5xx, timeouts)",
                        "schema": {"type": ["integer", "null"], "default": 6},
                    },
                },
            }
        ],
    }
