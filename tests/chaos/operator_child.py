"""Run one TikTok transfer operator's execute() in this process, as a task process would.

Usage: ``python tests/chaos/operator_child.py '{"operator": "video_list", "kwargs": {...}}'``.
The connections come from the environment (``AIRFLOW_CONN_*``), as in a worker. Prints one JSON
line last: ``{"result": <the operator's summary>}`` or ``{"error": str(exc), "type": name}`` (exit
status 0, 1 for an error Airflow would retry, 2 for AirflowFailException). With ``CHAOS_GO_FILE``
set, it imports everything, prints ``{"ready": pid}`` and waits for that file before starting, so
a test can start several children at the same moment.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def build_operator(spec: dict[str, Any]) -> Any:
    """Build the transfer operator a spec names: ``{"operator": "video_list", "kwargs": {...}}``."""
    from tiktok_pipeline.operators import (
        TikTokUserInfoToPostgresOperator,
        TikTokVideoListToPostgresOperator,
        TikTokVideoQueryToPostgresOperator,
    )

    classes = {
        "user_info": TikTokUserInfoToPostgresOperator,
        "video_list": TikTokVideoListToPostgresOperator,
        "video_query": TikTokVideoQueryToPostgresOperator,
    }
    return classes[spec["operator"]](task_id=f"chaos_{spec['operator']}", **spec["kwargs"])


def main() -> int:
    spec = json.loads(sys.argv[1])
    from tiktok_ops import settings

    settings.apply()
    from airflow.sdk.exceptions import AirflowFailException

    operator = build_operator(spec)
    go = os.environ.get("CHAOS_GO_FILE")
    if go:
        print(json.dumps({"ready": os.getpid()}), flush=True)
        deadline = time.monotonic() + 120
        while not Path(go).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    try:
        result = operator.execute({})
    except AirflowFailException as exc:
        print(json.dumps({"error": str(exc), "type": type(exc).__name__}), flush=True)
        return 2
    except Exception as exc:
        print(json.dumps({"error": str(exc), "type": type(exc).__name__}), flush=True)
        return 1
    print(json.dumps({"result": result}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
