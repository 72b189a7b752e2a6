"""The tiktok.* metrics reach a StatsD server: a real UDP socket, Airflow's own StatsD client."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from receivers import udp_receiver

EMIT = """
from airflow.sdk._shared.observability.metrics import stats
from airflow.sdk.configuration import conf
from airflow.sdk.observability.metrics import stats_utils

# What Airflow's task runner does when a task starts (task_runner.main).
stats.initialize(
    factory=stats_utils.get_stats_factory(), export_legacy_names=conf.getboolean("metrics", "legacy_names_on")
)

from tiktok_provider import metrics

metrics.api_call("/v2/user/info/", 200, seconds=0.25)
metrics.api_call("/v2/video/list/", 429)
metrics.api_call("/v2/video/query/", None)
metrics.retry("/v2/video/list/")
metrics.token_refresh()
metrics.rows_written("tiktok.video_snapshots", 42)
metrics.rows_written("tiktok.videos", 0)
metrics.budget_wait("/v2/video/list/", 1.5)
"""


def emit(port: int, **config: str) -> None:
    env = {
        **os.environ,
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(port),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        **config,
    }
    subprocess.run([sys.executable, "-c", EMIT], env=env, check=True, timeout=120)


def test_counters_and_timers_reach_statsd_with_the_dimensions_in_the_name() -> None:
    with udp_receiver() as receiver:
        emit(receiver.port)
        got = receiver.datagrams()
    got = [line for line in got if line.startswith("airflow.tiktok.")]  # Airflow's own metrics aside
    counters = {line for line in got if line.endswith("|c")}
    assert counters == {
        "airflow.tiktok.api_calls.user_info.200:1|c",
        "airflow.tiktok.api_calls.video_list.429:1|c",
        "airflow.tiktok.rate_limited.video_list:1|c",
        "airflow.tiktok.api_calls.video_query.error:1|c",
        "airflow.tiktok.retries.video_list:1|c",
        "airflow.tiktok.token_refreshes:1|c",
        "airflow.tiktok.rows_written.video_snapshots:42|c",
        "airflow.tiktok.budget_waits.video_list:1|c",
    }
    timers = {line.split(":")[0]: float(line.split(":")[1].split("|")[0]) for line in got if line.endswith("|ms")}
    assert timers == {
        "airflow.tiktok.api_latency.user_info": pytest.approx(250.0),
        "airflow.tiktok.budget_wait_time.video_list": pytest.approx(1500.0),
    }


def test_influxdb_style_tags_for_statsd_exporter_labels() -> None:
    with udp_receiver() as receiver:
        emit(receiver.port, AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED="True")
        got = receiver.datagrams()
    assert "airflow.tiktok.api_calls.video_list.429,endpoint=video_list,status=429:1|c" in got
    assert "airflow.tiktok.rows_written.video_snapshots,table=video_snapshots:42|c" in got


RUN_DAGS = """
import sys

from airflow.sdk._shared.observability.metrics import stats
from airflow.sdk.configuration import conf
from airflow.sdk.observability.metrics import stats_utils

stats.initialize(
    factory=stats_utils.get_stats_factory(), export_legacy_names=conf.getboolean("metrics", "legacy_names_on")
)

from tiktok_tools.dagrun import Dags

dags = Dags(sys.argv[1])
for dag_id, conf in (("tiktok_profile_snapshot", {}), ("tiktok_video_backfill", {"mode": "full"})):
    run = dags.run(dag_id, **conf)
    if str(run.state) != "success":
        sys.exit(f"{dag_id}: {run.state}")
"""


def test_a_real_dag_run_reports_the_rows_it_wrote(connect_account, tmp_path) -> None:
    """dag.test() of the profile and video DAGs, StatsD on: tiktok.rows_written.<table> per table written."""
    from pathlib import Path

    connect_account(videos=5)
    dags_dir = Path(__file__).resolve().parents[2] / "dags"
    env = {
        **os.environ,
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        "AIRFLOW__TIKTOK__COVER_ARCHIVE_PATH": f"file://{tmp_path}/covers",
    }
    with udp_receiver() as receiver:
        env["AIRFLOW__METRICS__STATSD_PORT"] = str(receiver.port)
        child = subprocess.run(
            [sys.executable, "-c", RUN_DAGS, str(dags_dir)], env=env, capture_output=True, text=True, timeout=600
        )
        assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
        got = receiver.datagrams()
    # (video_captures depends on how many of the simulator's videos are younger than 14 days)
    rows = sorted(
        line for line in got if line.startswith("airflow.tiktok.rows_written.") and ".video_captures:" not in line
    )
    assert rows == [
        "airflow.tiktok.rows_written.profile_snapshots:1|c",
        "airflow.tiktok.rows_written.video_snapshots:5|c",
        "airflow.tiktok.rows_written.videos:5|c",
    ]
    # Every request the two runs made is counted by endpoint and status, with its latency: user/info
    # once (the profile snapshot) and video/list once (5 videos fit one page).
    calls = sorted(line for line in got if line.startswith("airflow.tiktok.api_calls."))
    assert "airflow.tiktok.api_calls.user_info.200:1|c" in calls
    assert "airflow.tiktok.api_calls.video_list.200:1|c" in calls
    assert any(line.startswith("airflow.tiktok.api_latency.video_list:") and line.endswith("|ms") for line in got)
