"""OpenLineage events name the TikTok endpoint and the warehouse tables: the provider's file transport, dag.test()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def test_unit_lineage_names_the_endpoint_and_the_tables_with_their_columns() -> None:
    from tiktok_pipeline.lineage import operator_lineage

    lineage = operator_lineage("/v2/user/info/")
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("https://open.tiktokapis.com", "/v2/user/info/")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        ("postgres://tiktok-warehouse:5432", "tiktok.tiktok.profile_snapshots"),
        ("postgres://tiktok-warehouse:5432", "tiktok.tiktok.accounts"),
    ]
    columns = {f.name: f.type for f in lineage.outputs[0].facets["schema"].fields}
    assert columns["follower_count"] == "BIGINT" and columns["captured_at"] == "TIMESTAMP WITH TIME ZONE"
    accounts = {f.name for f in lineage.outputs[1].facets["schema"].fields}
    assert "open_id" in accounts


CHILD = """
import sys
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, BaseOperator

from adhoc_dags import register
from tiktok_pipeline.lineage import operator_lineage


class VideoListLike(BaseOperator):
    def execute(self, context: Any) -> None:
        pass

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        return operator_lineage("/v2/video/list/")


with DAG("lineage_test", start_date=datetime(2026, 1, 1), schedule=None) as dag:
    VideoListLike(task_id="sync_videos")
run = register(dag).test()
sys.exit(0 if str(run.state) == "success" else 1)
"""


def test_a_task_reports_its_lineage_through_the_openlineage_file_transport(test_databases: Any, tmp_path: Path) -> None:
    """In a fresh process: the OpenLineage provider caches its transport config for the process's life."""
    events_file = tmp_path / "openlineage.jsonl"
    env = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "tiktok-test",
        "AIRFLOW__OPENLINEAGE__DISABLED": "False",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]

    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    complete = [e for e in events if e.get("eventType") == "COMPLETE" and e["job"]["name"].endswith("sync_videos")]
    assert len(complete) == 1, [(e.get("eventType"), e.get("job", {}).get("name")) for e in events]
    [event] = complete
    inputs = [(d["namespace"], d["name"]) for d in event["inputs"]]
    assert inputs == [("https://open.tiktokapis.com", "/v2/video/list/")]
    assert [(d["namespace"], d["name"]) for d in event["outputs"]] == [
        ("postgres://tiktok-warehouse:5432", "tiktok.tiktok.videos"),
        ("postgres://tiktok-warehouse:5432", "tiktok.tiktok.video_snapshots"),
    ]
    fields = {f["name"] for f in event["outputs"][1]["facets"]["schema"]["fields"]}
    assert {"video_id", "snapshot_date", "view_count"} <= fields


REAL_CHILD = """
import sys
from datetime import datetime

from airflow.sdk import DAG

from adhoc_dags import register
from tiktok_pipeline.operators import TikTokUserInfoToPostgresOperator

with DAG("lineage_profile_test", start_date=datetime(2026, 1, 1), schedule=None) as dag:
    TikTokUserInfoToPostgresOperator(task_id="snapshot_profile", open_id=sys.argv[1])
run = register(dag).test()
sys.exit(0 if str(run.state) == "success" else 1)
"""


def test_the_real_profile_operator_reports_the_endpoint_in_and_its_tables_out(
    connect_account: Any, tmp_path: Path
) -> None:
    """The shipped operator, against the simulator, under the OpenLineage file transport."""
    open_id = connect_account(videos=1)
    events_file = tmp_path / "openlineage.jsonl"
    env = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "tiktok-test",
        "AIRFLOW__OPENLINEAGE__DISABLED": "False",
        "AIRFLOW__TIKTOK__COVER_ARCHIVE_PATH": f"file://{tmp_path}/covers",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.run(
        [sys.executable, "-c", REAL_CHILD, open_id], env=env, capture_output=True, text=True, timeout=300
    )
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]

    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    complete = [e for e in events if e.get("eventType") == "COMPLETE" and e["job"]["name"].endswith("snapshot_profile")]
    assert len(complete) == 1, [(e.get("eventType"), e.get("job", {}).get("name")) for e in events]
    [event] = complete
    assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [("https://open.tiktokapis.com", "/v2/user/info/")]
    assert [(d["namespace"], d["name"]) for d in event["outputs"]] == [
        ("postgres://tiktok-warehouse:5432", "tiktok.tiktok.profile_snapshots"),
        ("postgres://tiktok-warehouse:5432", "tiktok.tiktok.accounts"),
    ]
    assert "follower_count" in {f["name"] for f in event["outputs"][0]["facets"]["schema"]["fields"]}
