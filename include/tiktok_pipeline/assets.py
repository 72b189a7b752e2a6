"""The warehouse tables the TikTok DAGs update, as Airflow Assets, and the events they emit.

Each Asset's URI names its table the way the Postgres provider normalises them,
``postgres://<authority>/<database>/<schema>/<table>``. The authority and database are *logical*
names, not looked up from the warehouse connection: parsing a DAG file stays cheap and offline,
and every DAG names the same table the same way whatever connection it writes through. Set them in
``airflow.cfg`` (or ``AIRFLOW__TIKTOK_ASSETS__WAREHOUSE_AUTHORITY`` / ``..._DATABASE``) to match
the real server when lineage must join up with other tools':

.. code-block:: ini

    [tiktok_assets]
    warehouse_authority = tiktok-warehouse:5432
    warehouse_database = tiktok

Covers: the cover refresh writes fresh cover links into ``tiktok.videos`` and archives the images
into ``tiktok.cover_archive``; their Asset, ``tiktok.video_covers``, has the archive table's URI.
Not ``tiktok.videos``' URI under another name: Airflow keeps one active Asset per URI and per name,
and would deactivate one of the two (a task with an inactive outlet fails before it runs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Asset, Metadata, task

ASSETS_SECTION = "tiktok_assets"
DEFAULT_AUTHORITY = "tiktok-warehouse:5432"
DEFAULT_DATABASE = "tiktok"
SCHEMA = "tiktok"
GROUP = "tiktok"


def setting(key: str, fallback: str) -> str:
    from airflow.configuration import conf

    return (conf.get(ASSETS_SECTION, key, fallback=fallback) or fallback).strip().strip("/")


def table_uri(table: str) -> str:
    """``postgres://<authority>/<database>/tiktok/<table>`` for a warehouse table."""
    authority = setting("warehouse_authority", DEFAULT_AUTHORITY)
    database = setting("warehouse_database", DEFAULT_DATABASE)
    return f"postgres://{authority}/{database}/{SCHEMA}/{table}"


def table_asset(table: str, name: str | None = None) -> Asset:
    return Asset(name=name or f"{SCHEMA}.{table}", uri=table_uri(table), group=GROUP)


PROFILE_SNAPSHOTS = table_asset("profile_snapshots")
VIDEOS = table_asset("videos")
VIDEO_SNAPSHOTS = table_asset("video_snapshots")
VIDEO_COVERS = table_asset("cover_archive", name="tiktok.video_covers")

#: What each transfer operator updates (its ``outlets=``).
OUTLETS: dict[str, list[Asset]] = {
    "TikTokUserInfoToPostgresOperator": [PROFILE_SNAPSHOTS],
    "TikTokVideoListToPostgresOperator": [VIDEOS, VIDEO_SNAPSHOTS],
    "TikTokVideoQueryToPostgresOperator": [VIDEO_COVERS, VIDEO_SNAPSHOTS],
}


def _int(result: Mapping[str, Any], key: str) -> int:
    value = result.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


#: The rows of each asset one account task's summary (its return value) reports.
ROWS: dict[str, Any] = {
    # One account's summary says written=True; a batch's, how many of its accounts wrote one.
    PROFILE_SNAPSHOTS.name: lambda r: 1 if r.get("written") is True else _int(r, "written"),
    VIDEOS.name: lambda r: _int(r, "inserted") + _int(r, "updated"),
    # The video sync's summary does not carry snapshots_written yet (LoadResult has it): 0 until it does.
    VIDEO_SNAPSHOTS.name: lambda r: _int(r, "snapshots_written"),
    VIDEO_COVERS.name: lambda r: _int(r, "updated"),
}


def accounts_in(results: Iterable[Mapping[str, Any]]) -> int:
    """How many accounts the per-account tasks' summaries cover: one each, or a batch's ``batch_accounts``."""
    return sum(_int(result, "batch_accounts") or 1 for result in results)


def event_extra(results: Iterable[Any], asset: Asset, *, now: datetime | None = None) -> dict[str, Any]:
    """The extras of an asset event: how many accounts, how many rows, the snapshot date (UTC)."""
    results = [r for r in results if isinstance(r, Mapping)]
    count = ROWS.get(asset.name, lambda r: 0)
    rows = sum(count(result) for result in results)
    return {
        "accounts": accounts_in(results),
        "rows": rows,
        "snapshot_date": (now or datetime.now(UTC)).date().isoformat(),
    }


def publish_task(assets: list[Asset], results: Any, *, task_id: str = "publish_assets") -> Any:
    """A task that marks ``assets`` updated once per run, with extras added up from ``results``.

    One event per run, not one per account task: a DAG scheduled on the Asset wakes once when the
    day's data has landed, not fifty times while the accounts finish. It runs after the checks,
    like ``summarize`` (so: only when every account and check succeeded).
    """

    @task(task_id=task_id, outlets=list(assets), doc_md=PUBLISH_DOC)
    def publish(results: Any, **context: Any) -> None:
        # Index, don't iterate: iterating a lazy XCom sequence probes one past its end.
        values = [results[i] for i in range(len(results))] if results is not None else []
        for asset in assets:
            extra = event_extra(values, asset)
            yield_metadata(context, asset, extra)
            logging.getLogger("airflow.task").info("Asset %s updated: %s", asset.name, extra)

    return publish(results)


def yield_metadata(context: Mapping[str, Any], asset: Asset, extra: dict[str, Any]) -> None:
    """Attach ``extra`` to this task's event for ``asset`` (``outlet_events``)."""
    context["outlet_events"][asset].extra.update(extra)


def metadata(asset: Asset, extra: dict[str, Any]) -> Metadata:
    """For operators that ``yield`` their event's extras instead (``@task`` generators)."""
    return Metadata(asset, extra)


PUBLISH_DOC = """
### publish_assets
Marks the warehouse tables this DAG updates as updated (Airflow Assets, see the *Assets* view),
with how many accounts and rows and the snapshot date, so DAGs scheduled on them (e.g.
`tiktok_marts_refresh`) run. It runs only when every account task and the checks succeeded.

**On failure:** the metadata database was unreachable; clear this task (it writes nothing else).
"""
