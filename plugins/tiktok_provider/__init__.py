"""Airflow provider for the TikTok Display API: a hook, one operator per endpoint, a connection type."""

from __future__ import annotations

__version__ = "0.1.0"
