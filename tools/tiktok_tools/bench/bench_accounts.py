"""
The N-account daily profile snapshot through the real scheduler (``make up``), against the API bound.

Not part of ``make bench`` (nor its quick run): it needs a running stack whose simulator holds the
accounts, e.g. 2,000 of them::

    python -m tiktok_tools.up start --sim-accounts 2000 --sim-videos 1   # connects every account
    make bench FIG=accounts2000          # = python -m tiktok_tools.bench.bench_accounts

It sets the simulator's limit to ``--limit`` requests a minute per endpoint (600, TikTok's),
unpauses ``tiktok_profile_snapshot``, waits for any run that creates (the day's scheduled run)
and one rate window after it, resets the simulator's counters, triggers a run through the REST
API and waits for it. The API bound is the
time the limit alone needs for the run's ``user/info`` calls (N accounts: N / limit minutes).
It prints the run's wall time, wall ÷ bound, and Airflow's overhead share: the part of the wall
time above the bound, and, of it, the time no snapshot task was running at all (scheduling,
``select_accounts``, the checks). Above ``[tiktok] batch_accounts_above`` (500) the snapshots
run as batch tasks of ``[tiktok] accounts_per_batch`` (50).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

DAG_ID = "tiktok_profile_snapshot"
TASK_ID = "snapshot_profile"


def _union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def measure(*, limit: int, timeout: float) -> dict[str, Any]:
    from tiktok_ops import settings as local_settings

    local_settings.apply(local_settings.Settings.from_env())
    from tiktok_sim.testing import SimulatorAdmin
    from tiktok_tools import up

    stack = up.configure()
    password = json.loads(stack.passwords_file.read_text())[up.ADMIN_USER]
    headers = {"Authorization": f"Bearer {up.api_token(stack.url, up.ADMIN_USER, password)}"}
    api = f"{stack.url}/api/v2"
    admin = SimulatorAdmin(stack.settings.sim_url)
    accounts = len(admin.accounts())
    admin.set_config(rate_limit=limit, rate_window=60)
    requests.patch(f"{api}/dags/{DAG_ID}", json={"is_paused": False}, headers=headers, timeout=10).raise_for_status()
    # Alone on the scheduler and on the API: unpausing makes the scheduler create the day's scheduled
    # run, which would snapshot every account first (our run would then find them all done and skip
    # them; so it went in the first measurement). So: wait until the scheduler has created any due
    # run, then until no run of any DAG is queued or running, then one rate window more if one was.
    waited = time.time()
    while time.time() - waited < timeout:
        dag = requests.get(f"{api}/dags/{DAG_ID}", headers=headers, timeout=10).json()
        if (_ts(dag.get("next_dagrun_run_after")) or 0) > time.time():
            break
        time.sleep(2)
    was_busy = False
    while time.time() - waited < timeout:
        busy = requests.get(
            f"{api}/dags/~/dagRuns", params={"state": ["queued", "running"]}, headers=headers, timeout=10
        ).json()["total_entries"]
        if not busy:
            break
        was_busy = True
        time.sleep(2)
    if was_busy:
        print(f"waited {time.time() - waited:.0f}s for earlier runs; now one rate window for their calls to age out")
        time.sleep(admin.config()["rate_window"] + 1)
    admin.reset_stats()
    requests.post(f"{stack.settings.sim_url}/_sim/ratelimit/reset", timeout=10).raise_for_status()
    began = time.time()
    answer = requests.post(
        f"{api}/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}}, headers=headers, timeout=30
    )
    answer.raise_for_status()
    run_id = answer.json()["dag_run_id"]
    state = "queued"
    while time.time() - began < timeout:
        run = requests.get(f"{api}/dags/{DAG_ID}/dagRuns/{run_id}", headers=headers, timeout=10).json()
        state = run["state"]
        if state in ("success", "failed"):
            break
        time.sleep(1)
    ended = time.time()
    tis = requests.get(
        f"{api}/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 1000}, headers=headers, timeout=30
    ).json()["task_instances"]
    snapshot_spans = [
        (_ts(ti["start_date"]), _ts(ti["end_date"]))
        for ti in tis
        if ti["task_id"] == TASK_ID and ti["start_date"] and ti["end_date"]
    ]
    calls = admin.stats()["endpoints"].get("user_info", {}).get("requests", 0)
    wall = ended - began
    bound = accounts / limit * 60
    in_tasks = _union_seconds(snapshot_spans)  # type: ignore[arg-type]
    return {
        "accounts": accounts,
        "state": state,
        "run_id": run_id,
        "limit_per_minute": limit,
        "user_info_calls": calls,
        "snapshot_tasks": len(snapshot_spans),
        "wall_s": round(wall, 1),
        "api_bound_s": round(bound, 1),
        "wall_over_bound": round(wall / bound, 2),
        "overhead_share": round(max(0.0, wall - bound) / wall, 3),
        "no_snapshot_task_running_s": round(wall - in_tasks, 1),
        "no_snapshot_task_running_share": round((wall - in_tasks) / wall, 3),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=600, help="the simulator's requests a minute per endpoint")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the run")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    figures = measure(limit=args.limit, timeout=args.timeout)
    print(
        f"{figures['accounts']:,}-account profile snapshot ({figures['state']}, {figures['snapshot_tasks']} snapshot "
        f"tasks, {figures['user_info_calls']:,} user/info calls): {figures['wall_s']:.0f} s; API bound at "
        f"{figures['limit_per_minute']}/min {figures['api_bound_s']:.0f} s; "
        f"wall ÷ bound {figures['wall_over_bound']:.2f}; "
        f"Airflow overhead share {figures['overhead_share']:.0%} (no snapshot task running for "
        f"{figures['no_snapshot_task_running_s']:.0f} s)"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["state"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
