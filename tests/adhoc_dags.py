"""Run a DAG built inside a test (not a file of dags/) through dag.test().

dag.test() only creates a run for a DAG that has a serialized version in the metadata database;
the dag processor writes those for the files of a bundle. This writes one for an in-memory DAG,
into the ``dags-folder`` bundle, the way the dag processor would.
"""

from __future__ import annotations

from typing import Any


def register(dag: Any) -> Any:
    """Write ``dag``'s serialized version to the metadata database; return the DAG."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )
    return dag
