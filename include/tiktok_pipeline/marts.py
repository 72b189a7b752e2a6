"""Refreshing the analyst materialized views (the ``tiktok_marts_refresh`` DAG)."""

from __future__ import annotations

import logging
import re
from typing import Any

from airflow.sdk import task

MARTS_SECTION = "tiktok_marts"
#: The materialized views refreshed when TikTok data lands, schema-qualified. Migrations that add
#: one add it here; ``[tiktok_marts] materialized_views`` overrides the list.
MATERIALIZED_VIEWS: tuple[str, ...] = ()

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}\.[a-z_][a-z0-9_]{0,62}$")

REFRESH_DOC = """
### refresh_materialized_views
Refreshes each configured materialized view, one transaction each, `CONCURRENTLY` when the view
allows it (a unique index, already filled), plainly otherwise.

**On failure:** the warehouse is unreachable, a configured view does not exist, or the DAG's
database role does not own it (only the owner may refresh). Fix `[tiktok_marts]
materialized_views` or grant the role, then clear this task.
"""


def configured_views() -> list[str]:
    """The views to refresh: ``[tiktok_marts] materialized_views``, else ``MATERIALIZED_VIEWS``."""
    from airflow.configuration import conf

    raw = conf.get(MARTS_SECTION, "materialized_views", fallback=None)
    names = [n.strip() for n in raw.split(",")] if raw is not None else list(MATERIALIZED_VIEWS)
    names = [n for n in names if n]
    bad = [n for n in names if not _NAME.fullmatch(n)]
    if bad:
        raise ValueError(f"[{MARTS_SECTION}] materialized_views: not schema.view names: {bad}")
    return list(dict.fromkeys(names))


def refresh_views(engine: Any, views: list[str], *, log: Any) -> list[str]:
    """Refresh ``views`` (validated names); return them."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    for view in views:
        try:
            with engine.begin() as conn:
                conn.execute(text(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}"))
            log.info("Refreshed %s concurrently", view)
        except DBAPIError as exc:
            # 55000 object_not_in_prerequisite_state: no unique index, or never populated.
            if getattr(exc.orig, "pgcode", None) != "55000":
                raise
            with engine.begin() as conn:
                conn.execute(text(f"REFRESH MATERIALIZED VIEW {view}"))
            log.warning(
                "Refreshed %s plainly (readers waited): give it a unique index to refresh it concurrently", view
            )
    return views


def refresh_task(tiktok_conn_id: str) -> Any:
    @task(task_id="refresh_materialized_views", doc_md=REFRESH_DOC)
    def refresh(**context: Any) -> list[str]:
        log = logging.getLogger("airflow.task")
        for asset, events in (context.get("triggering_asset_events") or {}).items():
            for event in events:
                log.info("Triggered by %s: %s", getattr(asset, "name", asset), getattr(event, "extra", {}))
        views = configured_views()
        if not views:
            log.info("No materialized views configured ([%s] materialized_views): nothing to refresh", MARTS_SECTION)
            return []
        from tiktok_provider.hooks.tiktok import TikTokDisplayHook
        from tiktok_warehouse.db import get_engine

        engine = get_engine(TikTokDisplayHook(tiktok_conn_id=tiktok_conn_id).config.warehouse_conn_id)
        return refresh_views(engine, views, log=log)

    return refresh()
