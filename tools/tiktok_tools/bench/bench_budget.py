"""Many OS processes calling TikTok through the hook at once: the cluster-wide rate budget, measured.

``python -m tiktok_tools.bench.bench_budget child ...`` is one "task process": a ``TikTokDisplayHook`` on
the connection in its environment (``AIRFLOW_CONN_TIKTOK_DEFAULT`` / ``..._TIKTOK_WAREHOUSE``) that
calls ``user/info`` for its accounts until it has made its share of calls, then prints what it saw
as JSON. :func:`run_processes` starts groups of them (a group is a "worker": its own processes,
with their own limiter state) and gathers the results. The benchmark (figure 2 and the fairness
figure) and the tests (``tests/provider/test_budget.py``) both use it, so they measure the same thing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Child:
    """One process to start: its accounts, calls, priority and environment (the connection)."""

    open_ids: Sequence[str]
    calls: int
    priority: str = "normal"
    env: dict[str, str] = field(default_factory=dict)
    start_at: float | None = None  # wall time to start sending (processes start together)


def child_command(c: Child) -> list[str]:
    args = [sys.executable, "-m", "tiktok_tools.bench.bench_budget", "child"]
    args += ["--open-ids", ",".join(c.open_ids), "--calls", str(c.calls), "--priority", c.priority]
    if c.start_at is not None:
        args += ["--start-at", repr(c.start_at)]
    return args


def start(c: Child) -> subprocess.Popen[str]:
    return subprocess.Popen(
        child_command(c),
        env={**os.environ, **c.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child exited with {proc.returncode}: {err[-3000:]}")
    lines = out.strip().splitlines()
    result = json.loads(lines[-1])
    result["log"] = err + "\n".join(lines[:-1])  # Airflow may send log records to either
    return result


def run_processes(children: Sequence[Child], *, lead: float = 3.0, timeout: float = 300) -> list[dict[str, Any]]:
    """Start every child (they begin sending together, ``lead`` seconds from now); return their results."""
    at = time.time() + lead
    procs = [start(Child(c.open_ids, c.calls, c.priority, c.env, c.start_at or at)) for c in children]
    try:
        return [finish(p, timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def db_summary(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean and p99 of the shared store's time per acquire attempt, in ms, over every child."""
    ms = sorted(x for r in results for x in r.get("db_ms", []))
    if not ms:
        return {"attempts": 0}
    return {
        "attempts": len(ms),
        "mean_ms": statistics.fmean(ms),
        "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
    }


# -- the benchmark figures (called from tiktok_tools.bench.__main__) ------------------------------------


def paced_env(backend: str, limit: int, window: float) -> dict[str, str]:
    """``AIRFLOW_CONN_TIKTOK_DEFAULT`` for a child: the bench's paced connection with ``rate_budget``."""
    from tiktok_tools.bench.__main__ import PACED_CONN_ID

    conn = json.loads(os.environ[f"AIRFLOW_CONN_{PACED_CONN_ID.upper()}"])
    conn["extra"].update(
        rate_limit_per_minute=limit,
        rate_limit_window_seconds=window,
        rate_budget=backend,
        rate_budget_redis_url=os.environ.get("TIKTOK_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"),
        max_backoff_seconds=window,
        max_attempts=12,
    )
    return {"AIRFLOW_CONN_TIKTOK_DEFAULT": json.dumps(conn)}


def _measure(b: Any, label: str, groups: Sequence[Sequence[Child]], stagger: float) -> dict[str, Any]:
    """Run process groups (a group is a worker; the second starts ``stagger`` s later) and judge by the simulator."""
    from tiktok_tools.bench.__main__ import BenchError, utilisation

    sz = b.sizes
    admin = b.sim.admin
    time.sleep(sz.rate_window)  # the previous run's requests leave the window
    admin.reset_rate_limits()
    admin.reset_stats()
    at = time.time() + (6 if b.quick else 8)  # every process has imported Airflow and read its tokens first
    children = [
        Child(c.open_ids, c.calls, c.priority, c.env, at + g * stagger) for g, group in enumerate(groups) for c in group
    ]
    results = run_processes(children, timeout=600)
    log = admin.requests(endpoint="user_info", limit=1_000_000)
    admitted = [r["wall_time"] for r in log if not r["rate_limited"]]
    refused = sum(1 for r in log if r["rate_limited"])
    gave_up = sum(r["gave_up"] for r in results)
    if len(admitted) != sum(c.calls for c in children) - gave_up:
        raise BenchError(f"{label}: {len(admitted)} calls admitted, expected {sum(c.calls for c in children)}")
    ratio, in_windows, windows = utilisation(admitted, sz.rate_limit, sz.rate_window)
    return {
        "label": label,
        "processes": len(children),
        "groups": len(groups),
        "requests": len(log),
        "admitted": len(admitted),
        "rate_limited": refused,
        "rate_limited_share": refused / len(log),
        "windows": windows,
        "admitted_in_windows": in_windows,
        "utilisation": ratio,
        "achieved_per_s": in_windows / (windows * sz.rate_window),
        "limit_per_s": sz.rate_limit / sz.rate_window,
        "shared": all(r["shared"] for r in results),
        "retries": sum(r["retries"] for r in results),
        "gave_up": gave_up,  # calls still refused after every retry (a task would have failed)
        "store": db_summary(results),
    }


def _snapshot_time(
    b: Any, open_ids: Sequence[str], snapshot_env: dict[str, str], bulk_env: dict[str, str] | None
) -> float:
    """Seconds a snapshot of ``open_ids`` (user/info, 4 processes) takes; with ``bulk_env``, beside a bulk load
    (4 more processes). Quick (CI): 2 and 2."""
    sz = b.sizes
    shards = 2 if b.quick else 4
    admin = b.sim.admin
    time.sleep(sz.rate_window)
    admin.reset_rate_limits()
    bulk = []
    if bulk_env is not None:  # a backfill already has the endpoint busy when the snapshot starts
        calls = 1_000_000
        bulk = [start(Child(open_ids[i::shards], calls, "bulk", bulk_env)) for i in range(shards)]
        before = admin.stats()["total"]
        deadline = time.monotonic() + 120
        while admin.stats()["total"] - before < 2 * sz.rate_limit and time.monotonic() < deadline:
            time.sleep(0.2)
    try:
        quarter = [list(open_ids[i::shards]) for i in range(shards)]
        lead = 6 if b.quick else 8
        results = run_processes([Child(q, len(q), "normal", snapshot_env) for q in quarter], lead=lead, timeout=600)
    finally:
        for p in bulk:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    # from the first request to the last answer: a process that started late does not count its start-up
    return max(r["finished"] for r in results) - min(r["started"] for r in results)


def fig_rate_processes(b: Any) -> tuple[dict[str, Any], list[Any]]:
    """Figure 2: N = 8 task processes, then two workers of 4, against a scaled-down app-wide limit.

    Rows: today's per-process limiter (baseline), the shared budget (Postgres; Redis when it
    answers), two workers on the shared budget, and the fairness of a snapshot beside a backfill.
    """
    from tiktok_tools.bench.__main__ import Row, connect_accounts, reset_warehouse

    sz = b.sizes
    limit, window = sz.rate_limit, sz.rate_window
    procs = 4 if b.quick else 8  # quick (CI): the same rows with half the processes, each importing Airflow
    calls = max(4, round(sz.rate_limit * (3 if b.quick else 6) / procs))  # ~3 (6) windows of work at the limit
    snapshot_accounts = 12 if b.quick else 200
    reset_warehouse(b)
    open_ids = connect_accounts(b, [1] * max(procs, snapshot_accounts))
    admin = b.sim.admin
    admin.set_config(rate_limit=limit, rate_window=window, rate_scope="app")
    try:
        runs = []
        for backend, label in (("process", "per-process limiter (today)"), ("postgres", "shared budget, Postgres")):
            env = paced_env(backend, limit, window)
            runs.append(_measure(b, label, [[Child([open_ids[i]], calls, "normal", env) for i in range(procs)]], 0))
        try:
            import redis

            redis.Redis.from_url(os.environ.get("TIKTOK_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")).ping()
        except Exception:
            redis_ok = False
        else:
            redis_ok = not b.quick
        if redis_ok:
            env = paced_env("redis", limit, window)
            runs.append(
                _measure(
                    b, "shared budget, Redis", [[Child([open_ids[i]], calls, "normal", env) for i in range(procs)]], 0
                )
            )
        env = paced_env("postgres", limit, window)
        half = procs // 2
        workers = [[Child([open_ids[g * half + i]], calls, "normal", env) for i in range(half)] for g in range(2)]
        runs.append(_measure(b, f"two workers x {half}, shared budget", workers, window))
        # fairness: a snapshot of many accounts alone, then while a bulk load has the endpoint busy
        snap = open_ids[:snapshot_accounts]
        solo = _snapshot_time(b, snap, env, None)
        beside = _snapshot_time(b, snap, env, paced_env("postgres", limit, window))
    finally:
        admin.set_config(rate_limit=1_000_000, rate_window=60)
        admin.reset_rate_limits()
    shared = runs[1]
    result = {**shared, "runs": runs, "fairness": {"accounts": len(snap), "solo_s": solo, "beside_bulk_s": beside}}
    result["fairness"]["ratio"] = beside / solo
    rows = []
    for i, run in enumerate(runs):
        met = None if i == 0 else (run["utilisation"] >= 0.9 and run["rate_limited_share"] < 0.01)
        rows.append(
            Row(
                "2" if i == 0 else "",
                f"{run['label']}: {run['processes']} processes, {limit} req/{window:g} s",
                f"{run['achieved_per_s']:.2f} req/s of {limit / window:g}; {run['rate_limited']} of "
                f"{run['requests']:,} answered 429" + (f", {run['gave_up']} calls failed" if run["gave_up"] else ""),
                f"{run['utilisation']:.2f} / {run['rate_limited_share']:.1%}",
                "baseline" if i == 0 else ">= 0.90 / < 1%",
                met,
            )
        )
    store = shared["store"]
    if store.get("attempts"):
        rows.append(
            Row(
                "",
                "shared budget: Postgres time per acquire",
                f"{store['attempts']:,} attempts, p99 {store['p99_ms']:.2f} ms",
                f"{store['mean_ms']:.2f} ms",
                "< 1 ms",
                store["mean_ms"] < 1,
            )
        )
    rows.append(
        Row(
            "",
            f"fairness: snapshot of {len(snap)} accounts beside a bulk load ÷ alone",
            f"{beside:.1f} s vs {solo:.1f} s",
            f"{beside / solo:.2f}",
            "<= 1.2",
            beside / solo <= 1.2,
        )
    )
    return result, rows


def _child(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tiktok_tools.bench.bench_budget child")
    parser.add_argument("--open-ids", required=True)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--priority", default="normal")
    parser.add_argument("--start-at", type=float)
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from tiktok_pipeline.hooks import display_hook
    from tiktok_provider.budget import budget_for

    hook = display_hook(priority=args.priority)
    open_ids = args.open_ids.split(",")
    for open_id in open_ids:
        hook.access_token(open_id)  # tokens read before the clock starts
    if args.start_at:
        time.sleep(max(0.0, args.start_at - time.time()))
    from tiktok_provider.errors import TikTokRateLimited

    started = time.time()
    stamps = []
    gave_up = 0
    for i in range(args.calls):
        try:
            hook.get_user_info(open_ids[i % len(open_ids)], ["open_id"])
        except TikTokRateLimited:  # still 429 after every retry: what a task would fail with
            gave_up += 1
        stamps.append(time.time())
    budget = budget_for(hook.config, "/v2/user/info/")
    store = getattr(budget, "store", None)
    result = {
        "pid": os.getpid(),
        "calls": sum(hook.calls.values()),
        "retries": sum(hook.retries.values()),
        "gave_up": gave_up,
        "started": started,
        "finished": time.time(),
        "stamps": stamps,
        "shared": budget.shared,
        "db_ms": [s * 1000 for s in store.db_seconds] if store is not None else [],
    }
    print(json.dumps(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["child"]:
        return _child(argv[1:])
    print(
        "usage: python -m tiktok_tools.bench.bench_budget child --open-ids A,B --calls N [--priority P]",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
