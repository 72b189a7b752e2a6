"""OpenLineage for the transfer operators: the TikTok endpoint in, the warehouse tables out.

``operator_lineage(endpoint)`` is what an operator's ``get_openlineage_facets_on_complete``
returns. Names follow OpenLineage's naming conventions:

- input: namespace ``https://open.tiktokapis.com`` (the API host of the TikTok connection), name
  the endpoint path (``/v2/video/list/``);
- outputs: namespace ``postgres://<host>:<port>``, name ``<database>.tiktok.<table>``, each with a
  ``schema`` facet built from the SQLAlchemy table of ``tiktok_warehouse.tables`` (the one
  definition of the warehouse), so a catalog (Marquez, DataHub) shows the columns.

The host, port and database default to the Assets' logical names (``[tiktok_assets]``, see
``tiktok_pipeline.assets``), so lineage and Assets name a table the same way; an operator that
knows its warehouse connection may pass the real ones.
"""

from __future__ import annotations

from typing import Any

from tiktok_pipeline.assets import DEFAULT_AUTHORITY, DEFAULT_DATABASE, SCHEMA, setting

API_NAMESPACE = "https://open.tiktokapis.com"

#: The warehouse tables each endpoint's load writes.
ENDPOINT_TABLES: dict[str, tuple[str, ...]] = {
    "/v2/user/info/": ("profile_snapshots", "accounts"),
    "/v2/video/list/": ("videos", "video_snapshots"),
    "/v2/video/query/": ("videos", "video_snapshots"),
}


def schema_facet(table_name: str) -> Any:
    """OpenLineage ``SchemaDatasetFacet`` of a warehouse table, from ``tiktok_warehouse.tables``."""
    from airflow.providers.common.compat.openlineage.facet import SchemaDatasetFacet, SchemaDatasetFacetFields
    from sqlalchemy.dialects import postgresql

    from tiktok_warehouse import tables

    table = tables.metadata.tables[f"{SCHEMA}.{table_name}"]
    fields = []
    for column in table.columns:
        try:
            type_name = str(column.type.compile(dialect=postgresql.dialect()))
        except Exception:  # a type SQLAlchemy cannot render without a dialect
            type_name = type(column.type).__name__
        fields.append(SchemaDatasetFacetFields(name=column.name, type=type_name, description=column.comment))
    return SchemaDatasetFacet(fields=fields)


def table_dataset(table_name: str, *, authority: str | None = None, database: str | None = None) -> Any:
    from airflow.providers.common.compat.openlineage.facet import Dataset

    authority = authority or setting("warehouse_authority", DEFAULT_AUTHORITY)
    database = database or setting("warehouse_database", DEFAULT_DATABASE)
    return Dataset(
        namespace=f"postgres://{authority}",
        name=f"{database}.{SCHEMA}.{table_name}",
        facets={"schema": schema_facet(table_name)},
    )


def api_dataset(endpoint: str, *, api_host: str | None = None) -> Any:
    from airflow.providers.common.compat.openlineage.facet import Dataset

    return Dataset(namespace=(api_host or API_NAMESPACE).rstrip("/"), name=endpoint)


def operator_lineage(
    endpoint: str,
    *,
    tables: tuple[str, ...] | None = None,
    api_host: str | None = None,
    warehouse_authority: str | None = None,
    warehouse_database: str | None = None,
) -> Any:
    """The ``OperatorLineage`` of one load: ``endpoint`` in, its warehouse tables out."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    outputs = tables if tables is not None else ENDPOINT_TABLES.get(endpoint, ())
    return OperatorLineage(
        inputs=[api_dataset(endpoint, api_host=api_host)],
        outputs=[table_dataset(t, authority=warehouse_authority, database=warehouse_database) for t in outputs],
    )
