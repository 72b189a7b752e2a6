"""Run DAGs through dag.test() in a fresh process, so its log output and secrets masker start empty.

Usage: ``python tests/chaos/dag_child.py '[["tiktok_profile_snapshot", {}], ...]'``. Connections
come from the environment. Prints one JSON line last: ``{"result": [{"dag_id", "run_id", "state"}]}``.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path


def main() -> int:
    runs = json.loads(sys.argv[1])
    from tiktok_ops import settings

    settings.apply()
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    # A run's conf stays in the DAG object's params after dag.test(): pass every param every time.
    defaults = {dag_id: dict(dag.params.dump()) for dag_id, dag in bag.dags.items()}
    for dag in bag.dags.values():
        for task in dag.tasks:
            task.retry_delay = timedelta(0)
            task.retry_exponential_backoff = 0
    results = []
    for dag_id, conf in runs:
        run = bag.dags[dag_id].test(run_conf={**defaults[dag_id], **conf})
        results.append({"dag_id": dag_id, "run_id": run.run_id, "state": str(run.state)})
    print(json.dumps({"result": results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
