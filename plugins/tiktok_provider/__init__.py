"""Airflow provider for the TikTok Display API: a hook, a connection type, and the modules it is made of.

It imports nothing of the project it came from: tokens live in a store the caller passes in
(:class:`tiktok_provider.auth.TokenStore`).
"""

from __future__ import annotations

__version__ = "0.1.0"
