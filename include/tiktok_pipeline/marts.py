"""Refreshing the analyst materialized views (the ``tiktok_marts_refresh`` DAG).

The views and the function that refreshes them are the warehouse's (:mod:`tiktok_warehouse.marts`,
migration 0010): ``tiktok.refresh_marts()`` is SECURITY DEFINER, so the DAGs' least-privilege role
refreshes views it does not own, and it refreshes them ``CONCURRENTLY`` (readers never wait). A
new materialized mart is added by a migration, to the function and to ``MATERIALIZED_VIEWS``;
there is no configuration to keep in step.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import task

REFRESH_DOC = """
### refresh_materialized_views
Refreshes the warehouse's materialized marts (`tiktok.mart_account_engagement`,
`tiktok.mart_top_videos_7d`) with `SELECT tiktok.refresh_marts()`: concurrently, so readers are
never blocked, as the marts' owner (the function is `SECURITY DEFINER`), so this DAG's role needs
only `EXECUTE` on it.

**On failure:** the warehouse is unreachable, or its migrations are older than 0010 (no
`tiktok.refresh_marts()`; run `make migrate`); then clear this task. It writes nothing else.
"""


def refresh_task(tiktok_conn_id: str) -> Any:
    @task(task_id="refresh_materialized_views", doc_md=REFRESH_DOC)
    def refresh(**context: Any) -> list[str]:
        from tiktok_provider.hooks.tiktok import TikTokDisplayHook
        from tiktok_warehouse import marts
        from tiktok_warehouse.db import get_engine

        log = logging.getLogger("airflow.task")
        for asset, events in (context.get("triggering_asset_events") or {}).items():
            for event in events:
                log.info("Triggered by %s: %s", getattr(asset, "name", asset), getattr(event, "extra", {}))
        engine = get_engine(TikTokDisplayHook(tiktok_conn_id=tiktok_conn_id).config.warehouse_conn_id)
        with engine.begin() as conn:
            marts.refresh(conn)
        log.info("Refreshed %s", ", ".join(f"tiktok.{name}" for name in marts.MATERIALIZED_VIEWS))
        return [f"tiktok.{name}" for name in marts.MATERIALIZED_VIEWS]

    return refresh()
