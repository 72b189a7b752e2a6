"""`make bench QUICK=1` runs end to end and produces every figure: the benchmark code cannot rot.

It asserts that each figure is there and sane (counts add up, ratios are positive and finite),
never that a target is met: CI machines are too noisy for timed assertions.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins")])}
    proc = subprocess.run(
        [sys.executable, "-m", "tiktok_tools.bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=570,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "make bench QUICK=1" in proc.stdout, "the table is printed"
    return json.loads(out.read_text())


def test_every_figure_is_measured(results: dict[str, Any]) -> None:
    assert results["mode"] == "quick"
    assert results["errors"] == []
    assert set(results["figures"]) == {"api_efficiency", "rate_limit", "loads", "memory", "airflow", "versus"}
    assert results["machine"]["nproc"] >= 1


def test_api_efficiency_counts_every_call(results: dict[str, Any]) -> None:
    api = results["figures"]["api_efficiency"]
    assert api["list_ideal"] == sum(math.ceil(v / 20) for v in api["videos"])
    assert api["query_ideal"] == sum(math.ceil(s / 20) for s in api["stale_covers"])
    assert api["list_calls"] >= api["list_ideal"], "a page holds at most 20 videos"
    assert api["query_calls"] >= api["query_ideal"], "a query takes at most 20 ids"
    assert api["list_ratio"] == api["list_calls"] / api["list_ideal"]


def test_rate_limit_figure_is_sane(results: dict[str, Any]) -> None:
    rate = results["figures"]["rate_limit"]
    assert rate["admitted"] + rate["rate_limited"] == rate["requests"]
    assert rate["windows"] >= 1
    assert 0 < rate["utilisation"] <= 1.5
    assert 0 <= rate["rate_limited_share"] <= 1


def test_load_figures_are_ratios_of_positive_times(results: dict[str, Any]) -> None:
    loads = results["figures"]["loads"]
    assert all(positive(loads[k]) for k in ("copy_s", "upsert_empty_s", "upsert_unchanged_s"))
    assert all(positive(loads[k]) for k in ("upsert_empty_ratio", "upsert_unchanged_ratio"))


def test_memory_and_versus_figures_come_from_successful_runs(results: dict[str, Any]) -> None:
    memory, versus = results["figures"]["memory"], results["figures"]["versus"]
    for run in (memory["big"], memory["small"], versus["ours"], versus["theirs"]):
        assert run["state"] == "success"
        assert positive(run["wall_s"])
        assert run["peak_rss_mb"] >= run["rss_before_mb"] > 0
    assert math.isfinite(memory["growth_mb"])
    assert positive(versus["time_ratio"]) and positive(versus["memory_ratio"])


def test_airflow_overhead_covers_every_dag_file(results: dict[str, Any]) -> None:
    airflow = results["figures"]["airflow"]
    dag_files = {p.name for p in (ROOT / "dags").glob("*.py")}
    assert {p["file"] for p in airflow["parse"]} == dag_files
    assert all(positive(p["parse_ms"]) and p["dags"] == 1 for p in airflow["parse"])
    assert positive(airflow["overhead_ratio"])
    assert len(airflow["loop_s"]) == len(airflow["dag_test_s"]) >= 1
