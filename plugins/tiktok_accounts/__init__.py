"""
TikTok accounts in the Airflow UI: connect with one click, see every account's health, disconnect cleanly.

An Airflow plugin: a FastAPI app mounted on the api-server at ``/tiktok-accounts`` and a *TikTok
accounts* entry in the UI's navigation, which shows the page inside the UI (``/plugin/tiktok-accounts``).
TikTok's consent page and Airflow's own pages open in the top window, not in that frame; no other
site may frame the page (clickjacking).

Every page and endpoint needs a logged-in Airflow user (the UI's login); writing needs the right to
edit the ``tiktok_default`` connection, and connecting also the right to trigger the two DAGs it
starts. Only the TikTok webhook is open to anonymous callers: it is authenticated by TikTok's
signature instead. Configuration lives in the ``[tiktok_accounts]`` section (see
:mod:`tiktok_accounts.settings`).

This module stays light: Airflow imports it in every process (scheduler, workers, ...); the app is
built only when the api-server asks for ``fastapi_apps``.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.plugins_manager import AirflowPlugin

MOUNT = "/tiktok-accounts"


class TikTokAccountsPlugin(AirflowPlugin):
    """The accounts console: its FastAPI app and its navigation entry."""

    name = "tiktok_accounts"
    # Shown inside the UI at /plugin/tiktok-accounts. The href is relative, so it resolves against the
    # UI's base URL (also when Airflow is served under a path).
    external_views = [
        {
            "name": "TikTok accounts",
            "href": "tiktok-accounts/",
            "url_route": "tiktok-accounts",
            "icon": "tiktok-accounts/icon.svg",
            "nav_top_level": True,
        }
    ]

    @cached_property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        from tiktok_accounts.app import create_app

        return [{"app": create_app(), "url_prefix": MOUNT, "name": "TikTok accounts"}]
