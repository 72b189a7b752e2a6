"""Run DAGs through dag.test() in a fresh process, so its log output and secrets masker start empty.

Usage: ``python tests/chaos/dag_child.py '[["tiktok_profile_snapshot", {}], ...]'``. Connections
come from the environment. Prints one JSON line last: ``{"result": [{"dag_id", "run_id", "state"}]}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    runs = json.loads(sys.argv[1])
    from tiktok_ops import settings

    settings.apply()
    from tiktok_tools.dagrun import Dags

    dags = Dags(Path(__file__).resolve().parents[2] / "dags", instant_retries=True)
    results = []
    for dag_id, conf in runs:
        run = dags.run(dag_id, **conf)
        results.append({"dag_id": dag_id, "run_id": run.run_id, "state": str(run.state)})
    print(json.dumps({"result": results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
