"""`make bench`: how close the pipeline runs to its limits, as ratios measured side by side in one run.

1. API efficiency: video/list calls of a full backfill ÷ Σ⌈videos/20⌉, video/query calls of a
   cover refresh ÷ Σ⌈stale covers/20⌉, both counted by the simulator (target 1.00).
2. Rate-limit utilisation: several accounts backfilled at once (threads of one process, sharing
   the hook's pacing) against an app-wide limit scaled down to 60 requests per 6 s: admitted
   requests in the whole windows of the run ÷ the limit (target >= 0.9), and the share of
   requests answered 429 (target < 1 %).
3. Warehouse loads: ``Warehouse.upsert_videos`` of 100k videos, fresh and then unchanged, ÷ a plain
   COPY of the same rows into an unindexed temp table (``tools/tiktok_tools/bench/bench_loads.py``; target <= 2).
4. Memory: peak RSS of a 100k-video backfill minus that of a 1k-video one, each a
   ``tiktok_video_backfill`` run in a fresh process (target < 50 MB).
5. Airflow overhead: parse time of each DAG file, each in a fresh process with Airflow already
   imported, as the DAG processor parses (median of 3; target < 100 ms); and one
   ``tiktok_profile_snapshot`` run over 50 accounts through ``dag.test()`` ÷ the same API and
   database work in a plain loop (fastest of 2 alternating rounds each, after a warm-up).
6. Against the obvious Airflow way (``tools/tiktok_tools/bench/baseline_http_operator.py``: ``HttpOperator`` with a
   ``pagination_function``, then ``PostgresHook.insert_rows``) on the same 100k videos: wall time
   (fastest of 2 alternating runs each) and peak RSS of ours ÷ theirs (targets <= 1 and far
   below 1).

Peak RSS is the process's ``VmHWM`` (``/proc/self/status``), not ``ru_maxrss``: the latter
survives ``exec`` and so reports the parent's peak for a child started by a big parent.

The run creates its own Airflow metadata and warehouse databases (``airflow_bench_<hex>``,
``tiktok_bench_<hex>``) and its own simulator on a free port, and drops them at the end; the
databases of ``make demo`` are never touched. It prints one table and writes every number to
``tools/tiktok_tools/bench/results/bench-<UTC time>.json``. ``--quick`` runs a small version of each figure (a minute or
two), which is what CI runs; the full run takes a while and is for people.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tiktok_ops import settings as local_settings

ROOT = local_settings.ROOT
DAGS_DIR = ROOT / "dags"
HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
BENCH_LOADS = HERE / "bench_loads.py"
BASELINE_DAG = HERE / "baseline_http_operator.py"
BASELINE_DAG_ID = "baseline_http_operator_backfill"
PAGE_SIZE = 20
UNLIMITED = 1_000_000  # requests per window, for the simulator and the hook where pacing is not measured
PACED_CONN_ID = "tiktok_bench_paced"
WAREHOUSE_TABLES = ("video_snapshots", "sync_seen_videos", "sync_state", "videos", "profile_snapshots", "accounts")


@dataclass(frozen=True)
class Sizes:
    """How big each figure's run is."""

    api_videos: tuple[int, ...]  # figure 1: videos per account
    api_stale: tuple[int, ...]  # figure 1: stale covers per account
    rate_accounts: int  # figure 2
    rate_videos: int
    rate_limit: int
    rate_window: float
    loads_args: tuple[str, ...]  # figure 3: arguments of bench_loads.py
    big_videos: int  # figures 4 and 6
    small_videos: int  # figure 4
    backfill_rounds: int  # figure 6: big backfills of each side
    parse_repeat: int  # figure 5: fresh processes per DAG file (the median counts)
    snapshot_accounts: int
    snapshot_rounds: int


FULL = Sizes(
    api_videos=(4321, 1234, 57),
    api_stale=(437, 250, 13),
    rate_accounts=4,
    rate_videos=2400,
    rate_limit=60,
    rate_window=6.0,
    loads_args=("--rows", "100000", "--repeat", "3"),
    big_videos=100_000,
    small_videos=1_000,
    backfill_rounds=2,
    parse_repeat=3,
    snapshot_accounts=50,
    snapshot_rounds=2,
)
QUICK = Sizes(
    api_videos=(321, 45, 7),
    api_stale=(45, 21, 7),
    rate_accounts=3,
    rate_videos=400,
    rate_limit=20,
    rate_window=1.0,
    loads_args=("--quick", "--repeat", "1"),
    big_videos=2_000,
    small_videos=200,
    backfill_rounds=1,
    parse_repeat=1,
    snapshot_accounts=5,
    snapshot_rounds=1,
)


class BenchError(RuntimeError):
    """A figure could not be measured."""


@dataclass
class Row:
    """One line of the table."""

    figure: str
    what: str
    measured: str
    value: str
    target: str = ""
    met: bool | None = None


@dataclass
class Bench:
    """Everything the figures share: the sizes, the simulator, the databases, a hook."""

    quick: bool
    sizes: Sizes
    settings: local_settings.Settings
    sim: Any
    engine: Any
    hook: Any
    workdir: Path
    dags: Any = None  # tiktok_tools.dagrun.Dags of dags/


def _say(text: str) -> None:
    print(text, flush=True)


# -- measuring ---------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Return this process's peak resident set size in MB (``VmHWM``; ``ru_maxrss`` elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def rss_mb() -> float:
    """Return this process's current resident set size in MB."""
    import psutil

    return psutil.Process().memory_info().rss / (1024 * 1024)


def utilisation(stamps: Sequence[float], limit: int, window: float) -> tuple[float, int, int]:
    """Return (admitted ÷ allowed, admitted, windows) over the whole windows from the first request.

    Under a sliding-window limit a saturating client sends ``limit`` requests in every window that
    starts at the first request; the last, partial window only holds what was left to do.
    """
    stamps = sorted(stamps)
    if not stamps:
        raise BenchError("no request was admitted")
    windows = int((stamps[-1] - stamps[0]) // window)
    if windows < 1:
        raise BenchError(f"the run lasted less than one {window:g}s rate window; give it more videos")
    end = stamps[0] + windows * window
    admitted = sum(1 for t in stamps if t < end)
    return admitted / (windows * limit), admitted, windows


def machine() -> dict[str, Any]:
    """Describe this machine and checkout for the results file and the README."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        memory_gb = None
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit or None,
    }


# -- databases, simulator, accounts --------------------------------------------------------------


def _admin_connection(s: local_settings.Settings) -> Any:
    import psycopg2

    conn = psycopg2.connect(f"{s.pg_server}/postgres")
    conn.autocommit = True
    return conn


def drop_databases(s: local_settings.Settings) -> None:
    """Drop the run's two databases (closing whatever still holds a connection)."""
    from psycopg2 import sql

    conn = _admin_connection(s)
    try:
        with conn.cursor() as cur:
            for name in (s.airflow_db, s.warehouse_db):
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


def reset_warehouse(b: Bench) -> None:
    """Empty the warehouse and drop the baseline's table, so every figure starts from nothing."""
    from sqlalchemy import text

    with b.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(f'tiktok.{t}' for t in WAREHOUSE_TABLES)} CASCADE"))
        conn.execute(text("DROP SCHEMA IF EXISTS baseline CASCADE"))
    b.hook._tokens.clear()


def connect_accounts(b: Bench, videos: Sequence[int]) -> list[str]:
    """Create one simulator account per entry of ``videos`` and connect it through the token endpoint."""
    from tiktok_tools.simaccounts import connect_sim_accounts

    return connect_sim_accounts(b.sim.admin, b.hook, videos)


def tiktok_connection(b_sim: Any, key: str, *, limit: int, window: float) -> str:
    """Return an ``AIRFLOW_CONN_*`` value for the simulator with the given client-side pacing."""
    return json.dumps(
        {
            "conn_type": "tiktok",
            "host": b_sim.base_url,
            "login": b_sim.client_key,
            "password": b_sim.client_secret,
            "extra": {
                "token_encryption_key": key,
                "rate_limit_per_minute": limit,
                "rate_limit_window_seconds": window,
            },
        }
    )


def scalar(b: Bench, sql: str, **params: Any) -> Any:
    from sqlalchemy import text

    with b.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


# -- running DAGs ------------------------------------------------------------------------------


def run_dag(b: Bench, dag_id: str, **conf: Any) -> tuple[float, dict[str, float]]:
    """Run a DAG of ``dags/`` in this process through ``dag.test()``.

    :return: its wall time, and the seconds each task spent running (mapped instances added up).
    """
    from tiktok_tools.dagrun import busy_seconds, failed

    run, took = b.dags.timed(dag_id, **conf)
    if str(run.state) != "success":
        raise BenchError(f"{dag_id} ended {run.state}: {failed(run)}")
    return took, busy_seconds(run)


def child(b: Bench, kind: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run ``python -m tiktok_tools.bench _child kind args`` in a fresh process; return what it wrote."""
    out = b.workdir / f"{kind}-{uuid.uuid4().hex[:8]}.json"
    log = out.with_suffix(".log")
    with log.open("wb") as handle:
        proc = subprocess.run(
            [sys.executable, "-m", "tiktok_tools.bench", "_child", kind, *args, "--out", str(out)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env or dict(os.environ),
            check=False,
        )
    if proc.returncode != 0 or not out.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise BenchError(f"{kind} {' '.join(args)} exited with {proc.returncode}:\n" + "\n".join(tail))
    return json.loads(out.read_text())


def _child_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tiktok_tools.bench _child")
    parser.add_argument("kind", choices=("dag", "parse"))
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--dag-id")
    parser.add_argument("--conf", default="{}")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    profile_dir = os.environ.get("TIKTOK_BENCH_PROFILE")  # a folder: cProfile each child into it
    if profile_dir:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    conf = json.loads(args.conf)
    result = _parse_one(args.file) if args.kind == "parse" else _run_one(args.file, args.dag_id, conf)
    if profile_dir:
        profiler.disable()
        profiler.dump_stats(Path(profile_dir) / f"{args.kind}-{args.dag_id or args.file.name}-{os.getpid()}.prof")
    args.out.write_text(json.dumps(result))
    return 0


def _parse_one(path: Path) -> list[dict[str, Any]]:
    """Parse a DAG file (or folder) as the DAG processor does: Airflow imported, the file's own imports not.

    Each file is then parsed once more in the same process, its imports now loaded (``reparse_ms``).
    """
    import importlib

    local_settings.apply()
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.file import iter_airflow_imports

    files = sorted(path.glob("*.py")) if path.is_dir() else [path]
    for file in files:  # what [dag_processor] parsing_pre_import_modules does before a parse
        for module in iter_airflow_imports(str(file)):
            importlib.import_module(module)
    cold = DagBag(dag_folder=str(path))
    if cold.import_errors:
        raise BenchError(f"{path.name} does not import: {cold.import_errors}")
    warm = DagBag(dag_folder=str(path))
    reparse = {stat.file: stat.duration.total_seconds() * 1000 for stat in warm.dagbag_stats}
    return [
        {
            "file": Path(stat.file).name if stat.file != "." else path.name,
            "parse_ms": stat.duration.total_seconds() * 1000,
            "reparse_ms": reparse.get(stat.file),
            "dags": stat.dag_num,
            "tasks": stat.task_num,
        }
        for stat in cold.dagbag_stats
    ]


def _run_one(path: Path, dag_id: str, conf: dict[str, Any]) -> dict[str, Any]:
    """Run one DAG through ``dag.test()``; return its state, wall time and this process's memory."""
    local_settings.apply(server_context=True)
    from tiktok_tools.dagrun import DagImportError, Dags, task_instances

    try:
        dags = Dags(path)
    except DagImportError as exc:
        raise BenchError(f"{path.name} does not import: {exc}") from None
    before = rss_mb()
    run, took = dags.timed(dag_id, **conf)
    tasks = {
        f"{ti.task_id}[{ti.map_index}]": {"state": ti.state, "duration_s": ti.duration} for ti in task_instances(run)
    }
    return {
        "state": str(run.state),
        "tasks": tasks,
        "wall_s": took,
        "rss_before_mb": before,
        "peak_rss_mb": peak_rss_mb(),
    }


# -- the figures -------------------------------------------------------------------------------


def fig_api(b: Bench) -> tuple[dict[str, Any], list[Row]]:
    """Figure 1: API calls of a full backfill and of a cover refresh against the ideal."""
    from sqlalchemy import text

    sz = b.sizes
    reset_warehouse(b)
    open_ids = connect_accounts(b, sz.api_videos)
    b.sim.admin.reset_stats()
    backfill_s, _ = run_dag(b, "tiktok_video_backfill", mode="whole_history")
    list_calls = b.sim.admin.stats()["endpoints"]["video_list"]["requests"]
    list_ideal = sum(math.ceil(v / PAGE_SIZE) for v in sz.api_videos)
    stored = scalar(b, "SELECT count(*) FROM tiktok.videos WHERE removed_at IS NULL")
    if stored != sum(sz.api_videos):
        raise BenchError(f"the backfill stored {stored} videos, expected {sum(sz.api_videos)}")

    with b.engine.begin() as conn:
        for open_id, stale in zip(open_ids, sz.api_stale, strict=True):
            conn.execute(
                text(
                    "UPDATE tiktok.videos SET cover_expires_at = now() - interval '1 minute' WHERE id IN"
                    " (SELECT id FROM tiktok.videos WHERE open_id = :o ORDER BY id LIMIT :n)"
                ),
                {"o": open_id, "n": stale},
            )
    b.sim.admin.reset_stats()
    refresh_s, _ = run_dag(b, "tiktok_cover_refresh")
    query_calls = b.sim.admin.stats()["endpoints"]["video_query"]["requests"]
    query_ideal = sum(math.ceil(s / PAGE_SIZE) for s in sz.api_stale)
    result = {
        "videos": list(sz.api_videos),
        "list_calls": list_calls,
        "list_ideal": list_ideal,
        "list_ratio": list_calls / list_ideal,
        "stale_covers": list(sz.api_stale),
        "query_calls": query_calls,
        "query_ideal": query_ideal,
        "query_ratio": query_calls / query_ideal,
        "backfill_s": backfill_s,
        "refresh_s": refresh_s,
    }
    rows = [
        Row(
            "1",
            "video/list calls ÷ Σ⌈V/20⌉, full backfill",
            f"{list_calls:,} calls for {sum(sz.api_videos):,} videos ({list_ideal:,} ideal)",
            f"{result['list_ratio']:.2f}",
            "= 1.00",
            list_calls == list_ideal,
        ),
        Row(
            "",
            "video/query calls ÷ Σ⌈S/20⌉, cover refresh",
            f"{query_calls:,} calls for {sum(sz.api_stale):,} stale covers ({query_ideal:,} ideal)",
            f"{result['query_ratio']:.2f}",
            "= 1.00",
            query_calls == query_ideal,
        ),
    ]
    return result, rows


def fig_rate(b: Bench) -> tuple[dict[str, Any], list[Row]]:
    """Figure 2: 8 task processes, then two workers, against a scaled-down app-wide rate limit."""
    from tiktok_tools.bench.bench_budget import fig_rate_processes

    return fig_rate_processes(b)


def fig_loads(b: Bench) -> tuple[dict[str, Any], list[Row]]:
    """Figure 3: ``tools/tiktok_tools/bench/bench_loads.py`` (its own database), upserts against a plain COPY."""
    out = b.workdir / "loads.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH_LOADS), *b.sizes.loads_args, "--json", str(out), "--server", b.settings.pg_server],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise BenchError(f"{BENCH_LOADS.name} exited with {proc.returncode}:\n" + "\n".join(tail))
    data = json.loads(out.read_text())
    n = f"{data['rows']:,}"
    rows = [
        Row(
            "3",
            f"upsert {n} videos, fresh ÷ plain COPY",
            f"{data['upsert_empty_s']:.2f} s ÷ {data['copy_s']:.2f} s",
            f"{data['upsert_empty_ratio']:.2f}",
            "<= 2",
            data["upsert_empty_ratio"] <= 2,
        ),
        Row(
            "",
            f"upsert {n} videos, fresh ÷ COPY of the same rows into the same indexed tables",
            f"{data['upsert_empty_s']:.2f} s ÷ {data['indexed_copy_s']:.2f} s",
            f"{data['upsert_empty_indexed_ratio']:.2f}",
            "<= 1.5",
            data["upsert_empty_indexed_ratio"] <= 1.5,
        ),
        Row(
            "",
            f"upsert {n} videos, unchanged ÷ plain COPY",
            f"{data['upsert_unchanged_s']:.2f} s ÷ {data['copy_s']:.2f} s",
            f"{data['upsert_unchanged_ratio']:.2f}",
            "<= 2",
            data["upsert_unchanged_ratio"] <= 2,
        ),
    ]
    return data, rows


def fig_backfills(b: Bench) -> tuple[dict[str, Any], list[Row], dict[str, Any], list[Row]]:
    """Figures 4 and 6: backfills in fresh processes, ours small and big, the baseline big.

    The big ones alternate, ours then theirs, ``backfill_rounds`` times, each from an empty table;
    each side keeps its fastest round, so a burst of load on this shared machine is not blamed on
    one side. Memory is each side's highest peak.
    """
    from sqlalchemy import text

    sz = b.sizes
    reset_warehouse(b)
    big, small = connect_accounts(b, [sz.big_videos, sz.small_videos])
    backfill = DAGS_DIR / "tiktok_video_backfill.py"
    # dag.test() needs the DAG in a bundle: give the baseline a DAGs folder of its own.
    folder = b.workdir / "baseline_dags"
    folder.mkdir(exist_ok=True)
    baseline = folder / BASELINE_DAG.name
    shutil.copyfile(BASELINE_DAG, baseline)
    baseline_env = {
        **os.environ,
        "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
        "AIRFLOW_VAR_TIKTOK_ACCESS_TOKEN": b.hook.access_token(big),
    }

    def ours(open_id: str, videos: int) -> dict[str, Any]:
        conf = json.dumps({"mode": "full", "accounts": [open_id]})
        run = child(b, "dag", "--file", str(backfill), "--dag-id", "tiktok_video_backfill", "--conf", conf)
        stored = scalar(b, "SELECT count(*) FROM tiktok.videos WHERE open_id = :o", o=open_id)
        if run["state"] != "success" or stored != videos:
            raise BenchError(f"tiktok_video_backfill ended {run['state']} with {stored} of {videos}: {run['tasks']}")
        return run

    def theirs() -> dict[str, Any]:
        run = child(b, "dag", "--file", str(baseline), "--dag-id", BASELINE_DAG_ID, env=baseline_env)
        stored = scalar(b, "SELECT count(*) FROM baseline.videos") if run["state"] == "success" else 0
        if stored != sz.big_videos:
            raise BenchError(f"the baseline ended {run['state']} with {stored} of {sz.big_videos}: {run['tasks']}")
        return run

    ours_small = ours(small, sz.small_videos)
    ours_runs: list[dict[str, Any]] = []
    theirs_runs: list[dict[str, Any]] = []
    for _ in range(sz.backfill_rounds):
        with b.engine.begin() as conn:  # each round is a first backfill, for both
            conn.execute(text("TRUNCATE tiktok.video_snapshots, tiktok.sync_seen_videos, tiktok.sync_state"))
            conn.execute(text("DELETE FROM tiktok.videos WHERE open_id = :o"), {"o": big})
            conn.execute(text("DROP SCHEMA IF EXISTS baseline CASCADE"))
        ours_runs.append(ours(big, sz.big_videos))
        theirs_runs.append(theirs())

    ours_big = max(ours_runs, key=lambda run: run["peak_rss_mb"])
    growth = ours_big["peak_rss_mb"] - ours_small["peak_rss_mb"]
    memory = {
        "big_videos": sz.big_videos,
        "small_videos": sz.small_videos,
        "big": ours_big,
        "small": ours_small,
        "growth_mb": growth,
    }
    memory_rows = [
        Row(
            "4",
            f"peak RSS, {sz.big_videos:,}-video backfill - {sz.small_videos:,}-video one",
            f"{ours_big['peak_rss_mb']:.0f} MB - {ours_small['peak_rss_mb']:.0f} MB",
            f"{growth:+.0f} MB",
            "< 50 MB",
            growth < 50,
        )
    ]
    fastest_ours = min(ours_runs, key=lambda run: run["wall_s"])
    fastest_theirs = min(theirs_runs, key=lambda run: run["wall_s"])
    peak_ours = max(run["peak_rss_mb"] for run in ours_runs)
    peak_theirs = max(run["peak_rss_mb"] for run in theirs_runs)
    time_ratio = fastest_ours["wall_s"] / fastest_theirs["wall_s"]
    memory_ratio = peak_ours / peak_theirs
    versus = {
        "videos": sz.big_videos,
        "ours": fastest_ours,
        "theirs": fastest_theirs,
        "ours_runs": ours_runs,
        "theirs_runs": theirs_runs,
        "time_ratio": time_ratio,
        "memory_ratio": memory_ratio,
    }
    versus_rows = [
        Row(
            "6",
            f"{sz.big_videos:,}-video backfill, ours ÷ HttpOperator + insert_rows: time",
            f"{fastest_ours['wall_s']:.1f} s ÷ {fastest_theirs['wall_s']:.1f} s",
            f"{time_ratio:.2f}",
            "<= 0.8",
            time_ratio <= 0.8,
        ),
        Row(
            "",
            "the same backfills, ours ÷ theirs: peak RSS",
            f"{peak_ours:.0f} MB ÷ {peak_theirs:.0f} MB",
            f"{memory_ratio:.2f}",
            "<< 1",
            memory_ratio <= 0.5,
        ),
    ]
    return memory, memory_rows, versus, versus_rows


def plain_snapshot_loop(b: Bench, check_sql: str) -> float:
    """Do a profile snapshot run's API and database work in a plain loop; return its wall time."""
    from sqlalchemy import text

    from tiktok_pipeline.hooks import display_hook as TikTokDisplayHook  # with the warehouse token store
    from tiktok_warehouse.db import get_engine
    from tiktok_warehouse.loads import Warehouse

    started = time.perf_counter()
    hook = TikTokDisplayHook()
    warehouse = Warehouse(get_engine(hook.config.warehouse_conn_id))
    for account in hook.token_store.list_accounts(statuses=("active",)):
        user = hook.get_user_info(account.open_id)
        now = datetime.now(UTC)
        warehouse.upsert_account_profile(account.open_id, user, now=now)
        warehouse.upsert_profile_snapshot(account.open_id, user, captured_at=now)
    with warehouse.engine.connect() as conn:
        if not all(conn.execute(text(check_sql)).one()):
            raise BenchError("the profile snapshot checks failed after the plain loop")
    took = time.perf_counter() - started
    warehouse.engine.dispose()
    return took


def fig_airflow(b: Bench) -> tuple[dict[str, Any], list[Row]]:
    """Figure 5: DAG parse times, and a profile snapshot run through Airflow against a plain loop."""
    from sqlalchemy import text

    child(b, "parse", "--file", str(DAGS_DIR))  # fills the bytecode cache, as a deployed Airflow has one
    parses = []
    for path in sorted(DAGS_DIR.glob("*.py")):
        runs = [child(b, "parse", "--file", str(path))[0] for _ in range(b.sizes.parse_repeat)]
        parse = dict(runs[0])
        parse["runs_ms"] = [run["parse_ms"] for run in runs]
        parse["parse_ms"] = statistics.median(parse["runs_ms"])
        parses.append(parse)
    slowest = max(parses, key=lambda p: p["parse_ms"])
    median = f" (median of {b.sizes.parse_repeat})" if b.sizes.parse_repeat > 1 else ""

    sz = b.sizes
    reset_warehouse(b)
    connect_accounts(b, [0] * sz.snapshot_accounts)
    dag = b.dags["tiktok_profile_snapshot"]
    check_sql = dag.task_dict["check_profile_snapshots"].sql
    loops: list[float] = []
    runs: list[tuple[float, dict[str, float]]] = []
    # Round 0 warms up (the first dag.test() of a process starts Airflow's in-process API); then
    # the two alternate, so both see the same machine, and each keeps its fastest round.
    for round_ in range(sz.snapshot_rounds + 1):
        with b.engine.begin() as conn:
            conn.execute(text("DELETE FROM tiktok.profile_snapshots"))
        loop = plain_snapshot_loop(b, check_sql)
        with b.engine.begin() as conn:
            conn.execute(text("DELETE FROM tiktok.profile_snapshots"))
        run = run_dag(b, dag.dag_id)
        if round_:
            loops.append(loop)
            runs.append(run)
    snapshots = scalar(b, "SELECT count(*) FROM tiktok.profile_snapshots")
    if snapshots != sz.snapshot_accounts:
        raise BenchError(f"{snapshots} profile snapshots after the run, expected {sz.snapshot_accounts}")
    loop_s, (dag_s, busy) = min(loops), min(runs, key=lambda run: run[0])
    ratio = dag_s / loop_s
    result = {
        "parse": parses,
        "slowest_parse_ms": slowest["parse_ms"],
        "accounts": sz.snapshot_accounts,
        "loop_s": loops,
        "dag_test_s": [took for took, _ in runs],
        "task_busy_s": busy,
        "overhead_ratio": ratio,
        "overhead_per_account_s": (dag_s - loop_s) / sz.snapshot_accounts,
    }
    rows = [
        Row(
            "5",
            f"DAG file parse in a fresh process{median}, slowest ({slowest['file']})",
            ", ".join(f"{p['parse_ms']:.0f}" for p in parses) + " ms",
            f"{slowest['parse_ms']:.0f} ms",
            "< 100 ms",
            slowest["parse_ms"] < 100,
        ),
        Row(
            "",
            f"profile snapshot of {sz.snapshot_accounts} accounts, dag.test() ÷ plain loop",
            f"{dag_s:.1f} s ÷ {loop_s:.2f} s ({result['overhead_per_account_s'] * 1000:.0f} ms/account)",
            f"{ratio:.1f}",
        ),
    ]
    return result, rows


# -- the run -----------------------------------------------------------------------------------

STEPS: dict[str, tuple[str, ...]] = {
    "api": ("1",),
    "rate": ("2",),
    "loads": ("3",),
    "backfills": ("4", "6"),
    "airflow": ("5",),
}


def run_figures(b: Bench, wanted: set[str]) -> tuple[dict[str, Any], dict[str, list[Row]], list[str]]:
    figures: dict[str, Any] = {}
    rows: dict[str, list[Row]] = {}
    errors: list[str] = []
    work: list[tuple[str, Callable[[Bench], tuple[Any, ...]]]] = [
        ("api", fig_api),
        ("rate", fig_rate),
        ("loads", fig_loads),
        ("backfills", fig_backfills),
        ("airflow", fig_airflow),
    ]
    names = {"1": "api_efficiency", "2": "rate_limit", "3": "loads", "4": "memory", "5": "airflow", "6": "versus"}
    for step, measure in work:
        numbers = STEPS[step]
        if not wanted & set(numbers):
            continue
        _say(f"bench: figure {' and '.join(numbers)} ...")
        started = time.monotonic()
        try:
            out = measure(b)
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(exc)).strip()
            _say(f"bench: figure {' and '.join(numbers)} FAILED: {detail}")
            errors.append(f"figure {'/'.join(numbers)}: {detail}")
            for number in numbers:
                figures[names[number]] = {"error": detail}
                rows[number] = [Row(number, names[number].replace("_", " "), "failed (see above)", "—")]
            continue
        for i, number in enumerate(numbers):
            figures[names[number]], rows[number] = out[2 * i], out[2 * i + 1]
        _say(f"bench: figure {' and '.join(numbers)} done in {time.monotonic() - started:.0f}s")
    return figures, rows, errors


def format_table(rows: list[Row]) -> list[str]:
    header = Row("#", "figure", "measured", "value", "target", None)
    table = [header, *rows]
    cells = [
        [r.figure, r.what, r.measured, r.value, r.target, "" if r.met is None else ("ok" if r.met else "OFF")]
        for r in table
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(6)]
    lines = []
    for n, row in enumerate(cells):
        text = "  ".join(
            cell.rjust(width) if i == 3 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        lines.append(text.rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_child"]:
        return _child_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m tiktok_tools.bench", description=__doc__.split("\n\n")[0].strip("`")
    )
    parser.add_argument("--quick", action="store_true", help="a small version of each figure (for CI)")
    parser.add_argument("--only", help="comma-separated figure numbers, e.g. 1,5 (default: all six)")
    parser.add_argument(
        "--json", type=Path, help="where to write the results (default: tools/tiktok_tools/bench/results/)"
    )
    args = parser.parse_args(argv)
    wanted = set(args.only.split(",")) if args.only else {"1", "2", "3", "4", "5", "6"}
    if not wanted <= {"1", "2", "3", "4", "5", "6"}:
        parser.error(f"--only takes figure numbers 1-6, got {args.only}")

    # Our own two databases, whatever the shell points Airflow at; set before Airflow is imported.
    tag = uuid.uuid4().hex[:8]
    os.environ["TIKTOK_AIRFLOW_DB"] = f"airflow_bench_{tag}"
    os.environ["TIKTOK_WAREHOUSE_DB"] = f"tiktok_bench_{tag}"
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    s = local_settings.Settings.from_env()
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = s.database_url(s.airflow_db)
    local_settings.apply(s, server_context=True)

    began = datetime.now(UTC)
    mode = "quick" if args.quick else "full"
    _say(f"bench: {mode} run; scratch databases {s.airflow_db} and {s.warehouse_db}")
    from tiktok_ops import bootstrap

    bootstrap.ensure_databases(s)
    sim = None
    engine = None
    try:
        with tempfile.TemporaryDirectory(prefix="tiktok-bench-") as workdir:
            # Child processes keep compiled bytecode, as a deployed Airflow does, even where the shell
            # says PYTHONDONTWRITEBYTECODE: otherwise every DAG parse would compile its imports.
            os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
            os.environ["PYTHONPYCACHEPREFIX"] = str(Path(workdir) / "pycache")
            bootstrap.migrate_airflow()
            bootstrap.ensure_pool()
            from cryptography.fernet import Fernet
            from sqlalchemy import create_engine

            from tiktok_sim.testing import start_simulator
            from tiktok_warehouse import migrate

            engine = create_engine(s.database_url(s.warehouse_db))
            migrate.upgrade(engine)
            sim = start_simulator(seed=20261125, accounts=0, rate_limit=UNLIMITED, rate_window=60)
            key = Fernet.generate_key().decode()
            sizes = QUICK if args.quick else FULL
            os.environ["AIRFLOW_CONN_TIKTOK_WAREHOUSE"] = s.database_url(s.warehouse_db, driver="postgresql")
            os.environ["AIRFLOW_CONN_TIKTOK_DEFAULT"] = tiktok_connection(sim, key, limit=UNLIMITED, window=60)
            os.environ[f"AIRFLOW_CONN_{PACED_CONN_ID.upper()}"] = tiktok_connection(
                sim, key, limit=sizes.rate_limit, window=sizes.rate_window
            )
            os.environ["AIRFLOW_CONN_TIKTOK_HTTP"] = json.dumps({"conn_type": "http", "host": sim.base_url})

            from tiktok_pipeline.hooks import display_hook as TikTokDisplayHook  # with the warehouse token store
            from tiktok_tools.dagrun import DagImportError, Dags

            try:
                dags = Dags(DAGS_DIR)
            except DagImportError as exc:
                raise BenchError(str(exc)) from None
            b = Bench(
                quick=args.quick,
                sizes=sizes,
                settings=s,
                sim=sim,
                engine=engine,
                hook=TikTokDisplayHook(),
                workdir=Path(workdir),
                dags=dags,
            )
            figures, rows, errors = run_figures(b, wanted)
    finally:
        if sim is not None:
            sim.stop()
        if engine is not None:
            engine.dispose()
        if "airflow.settings" in sys.modules:  # let go of the metadata database before dropping it
            sys.modules["airflow.settings"].dispose_orm()
        drop_databases(s)

    took = (datetime.now(UTC) - began).total_seconds()
    info = machine()
    results = {
        "mode": mode,
        "started_at": began.isoformat(timespec="seconds"),
        "duration_s": round(took, 1),
        "machine": info,
        "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(sizes).items()},
        "figures": figures,
        "errors": errors,
    }
    path = args.json or RESULTS_DIR / f"bench-{began:%Y%m%dT%H%M%SZ}{'-quick' if args.quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")

    _say("")
    _say(
        f"make bench{' QUICK=1' if args.quick else ''}, {began:%Y-%m-%d %H:%M} UTC, "
        f"took {took // 60:.0f}m{took % 60:02.0f}s; "
        f"{info['nproc']} CPUs ({info['cpu']}), {info['memory_gb']} GB, Python {info['python']}"
    )
    table_rows = [row for number in sorted(rows) for row in rows[number]]
    for line in format_table(table_rows):
        _say(line)
    _say("")
    _say(f"bench: results written to {path}")
    if errors:
        _say(f"bench: {len(errors)} figure(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
