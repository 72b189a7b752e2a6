"""Test session setup: Airflow's environment points at test databases before Airflow is imported."""

from __future__ import annotations

import os

os.environ.setdefault("TIKTOK_AIRFLOW_DB", "airflow_test")
os.environ.setdefault("TIKTOK_WAREHOUSE_DB", "tiktok_test")

from tiktok_local import settings as local_settings  # noqa: E402

SETTINGS = local_settings.apply()
