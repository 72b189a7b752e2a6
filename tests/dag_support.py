"""Reading what a dag.test() run left behind: task states, tries, XComs, and rows of the warehouse."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text


def states(run: Any) -> dict[tuple[str, int], str]:
    """Return ``{(task_id, map_index): state}`` of a DagRun."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances(session=session)}


def tries(run: Any) -> dict[tuple[str, int], int]:
    """Return ``{(task_id, map_index): try_number}`` of a DagRun."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return {(ti.task_id, ti.map_index): ti.try_number for ti in run.get_task_instances(session=session)}


def xcom(run: Any, task_id: str) -> list[Any]:
    """Return the return values of a task in a DagRun, by map index."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        found = (
            session.query(XComModel)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, key="return_value")
            .order_by(XComModel.map_index)
            .all()
        )
        return [XComModel.deserialize_value(r) for r in found]


def rows(engine: Any, query: str, **params: Any) -> list[tuple]:
    """Return the rows of a SQL query as tuples."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(query), params)]
