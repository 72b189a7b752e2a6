"""Run the DAGs in this process through ``dag.test()`` and read what a run left behind.

One place for the demo, the benchmark, the soak and the tests. Call :func:`tiktok_ops.settings.apply`
first (Airflow reads its environment on import).

``dag.test()`` runs the tasks on the DAG object itself, and a run's conf stays in that object's
params afterwards (a worker would start a fresh process); so :class:`Dags` reads every DAG's param
defaults once, at parse time, and every run passes every param, defaults first.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from tiktok_ops.settings import ROOT


class DagImportError(RuntimeError):
    """A DAG file of the folder does not import; the message names each file and its error."""


class Dags:
    """The DAGs of one folder, parsed once.

    :param folder: default ``AIRFLOW__CORE__DAGS_FOLDER``, else the repository's ``dags/``.
    :param instant_retries: Airflow retries start at once (no retry delay): for chaos and soak runs.
    """

    def __init__(self, folder: Path | str | None = None, *, instant_retries: bool = False) -> None:
        from airflow.dag_processing.dagbag import DagBag

        folder = folder or os.environ.get("AIRFLOW__CORE__DAGS_FOLDER") or ROOT / "dags"
        bag = DagBag(dag_folder=str(folder))
        if bag.import_errors:
            raise DagImportError(f"DAG import errors: {bag.import_errors}")
        self.dags: dict[str, Any] = bag.dags
        self.defaults = {dag_id: dict(dag.params.dump()) for dag_id, dag in self.dags.items()}
        if instant_retries:
            for dag in self.dags.values():
                for task in dag.tasks:
                    task.retry_delay = timedelta(0)
                    task.retry_exponential_backoff = 0

    def __getitem__(self, dag_id: str) -> Any:
        return self.dags[dag_id]

    def run(self, dag_id: str, **conf: Any) -> Any:
        """Run ``dag_id`` through ``dag.test()`` with its defaults and ``conf``; return the DagRun."""
        return self.dags[dag_id].test(run_conf={**self.defaults[dag_id], **conf})

    def rerun(self, run: Any, **conf: Any) -> Any:
        """Run ``run``'s DAG again for the same run (``run_after`` and logical date), as clearing it does.

        ``dag.test()`` replaces the run of that logical date; ``conf`` as in :meth:`run`.
        """
        return self.dags[run.dag_id].test(
            run_conf={**self.defaults[run.dag_id], **conf}, run_after=run.run_after, logical_date=run.logical_date
        )

    def timed(self, dag_id: str, **conf: Any) -> tuple[Any, float]:
        """Like :meth:`run`; also return the run's wall time in seconds."""
        started = time.perf_counter()
        run = self.run(dag_id, **conf)
        return run, time.perf_counter() - started


@dataclass(frozen=True)
class TaskResult:
    """What one task instance of a run left: its state, tries and run time."""

    task_id: str
    map_index: int
    state: str
    try_number: int
    duration: float | None


def task_instances(run: Any) -> list[TaskResult]:
    """Return the task instances of a DagRun, read in a session of their own."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return [
            TaskResult(ti.task_id, ti.map_index, str(ti.state), ti.try_number, ti.duration)
            for ti in run.get_task_instances(session=session)
        ]


def states(run: Any) -> dict[tuple[str, int], str]:
    """Return ``{(task_id, map_index): state}`` of a DagRun."""
    return {(ti.task_id, ti.map_index): str(ti.state) for ti in task_instances(run)}


def tries(run: Any) -> dict[tuple[str, int], int]:
    """Return ``{(task_id, map_index): try_number}`` of a DagRun."""
    return {(ti.task_id, ti.map_index): ti.try_number for ti in task_instances(run)}


def failed(run: Any) -> list[str]:
    """Return ``task_id[map_index]=state`` of each task instance of a DagRun that did not succeed."""
    return [f"{ti.task_id}[{ti.map_index}]={ti.state}" for ti in task_instances(run) if ti.state != "success"]


def busy_seconds(run: Any) -> dict[str, float]:
    """Return the seconds each task of a DagRun spent running (mapped instances added up)."""
    busy: dict[str, float] = {}
    for ti in task_instances(run):
        busy[ti.task_id] = busy.get(ti.task_id, 0.0) + (ti.duration or 0.0)
    return busy


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


def summary(run: Any) -> dict[str, Any]:
    """Return what a run's ``summarize`` task (the connect DAG: its ``connect`` task) returned, or {}."""
    for task_id in ("summarize", "connect"):
        found = xcom(run, task_id)
        if found and isinstance(found[0], dict):
            return found[0]
    return {}
