"""Crashes: a backfill SIGKILLed at several points, and Postgres dropping the task mid-batch.

dag.test() runs tasks in its own process, so these tests run the operator's execute() in a child
process (tests/chaos/operator_child.py), as a worker's task process would, and kill that. The
retry is a fresh process, as Airflow's would be: it must resume from the committed cursor.
"""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import UTC, datetime
from typing import Any

import psycopg2
import pytest
from chaos_support import SETTINGS, Child, reset_data, rows, run_child, run_inline, wait_until, warehouse_contents

from tiktok_pipeline.sync import MAX_UNCOMMITTED_PAGES

pytestmark = pytest.mark.integration

PAGE = 20


def list_requests(sim: Any) -> int:
    return sim.admin.stats()["endpoints"].get("video_list", {}).get("requests", 0)


def waiting_backends(role: str) -> list[int]:
    """Backends of the DAG role in the test warehouse that wait for a lock."""
    conn = psycopg2.connect(f"{SETTINGS.pg_server}/{SETTINGS.warehouse_db}")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND usename = %s AND wait_event_type = 'Lock'",
                (SETTINGS.warehouse_db, role),
            )
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def role_backends(role: str) -> list[int]:
    conn = psycopg2.connect(f"{SETTINGS.pg_server}/{SETTINGS.warehouse_db}")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND usename = %s",
                (SETTINGS.warehouse_db, role),
            )
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def committed_pages(engine: Any, open_id: str) -> int:
    """The pages the account's unfinished sync has committed (0 before it starts)."""
    found = rows(engine, "SELECT pages FROM tiktok.sync_state WHERE open_id = :o AND finished_at IS NULL", o=open_id)
    return found[0][0] if found else 0


def unfinished_pages(engine: Any, open_id: str) -> int:
    [(pages,)] = rows(
        engine, "SELECT pages FROM tiktok.sync_state WHERE open_id = :o AND finished_at IS NULL", o=open_id
    )
    return pages


def stored_ids(engine: Any, ids: list[str]) -> set[str]:
    return {r[0] for r in rows(engine, "SELECT id FROM tiktok.videos WHERE id = ANY(:ids)", ids=ids)}


def lock_new_video(open_id: str, video_id: str) -> Any:
    """Insert ``video_id`` in a transaction left open: a load that reaches that id waits for it."""
    conn = psycopg2.connect(f"{SETTINGS.pg_server}/{SETTINGS.warehouse_db}")
    now = datetime.now(UTC)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO tiktok.videos (id, open_id, first_seen_at, last_seen_at) VALUES (%s, %s, %s, %s)",
            (video_id, open_id, now, now),
        )
    return conn


def lock_video(video_id: str) -> Any:
    """Lock an existing video row in a transaction left open."""
    conn = psycopg2.connect(f"{SETTINGS.pg_server}/{SETTINGS.warehouse_db}")
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM tiktok.videos WHERE id = %s FOR UPDATE", (video_id,))
    return conn


def test_backfill_killed_with_sigkill_at_several_points_resumes_to_a_clean_runs_result(
    sim, connect, dag_role, frozen_clock, clean_warehouse
) -> None:
    open_id = connect(videos=200)
    ids = sim.admin.video_ids(open_id)  # newest first: page k holds ids[20k:20k+20]
    # Each page takes 150 ms to arrive, so there is time to kill at a chosen moment.
    sim.admin.set_faults("video_list", probabilities={"slow": 1.0}, slow_seconds=0.15)
    spec = {"operator": "video_list", "kwargs": {"open_id": open_id, "mode": "full"}}
    sim.admin.reset_stats()
    kills = 0
    # (pages asked for since the child started, whether to wait for a commit): while it handles
    # the answer (before its commit), and after a commit while the next request is on the wire.
    for answered, after_a_commit in ((1, False), (2, True)):
        before = list_requests(sim)
        pages_before = committed_pages(clean_warehouse, open_id)
        child = Child(spec)
        wait_until(lambda: list_requests(sim) >= before + answered, timeout=60, interval=0.002)  # noqa: B023
        if after_a_commit:
            wait_until(
                lambda: committed_pages(clean_warehouse, open_id) > pages_before,  # noqa: B023
                timeout=60,
                interval=0.002,
            )
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
        kills += 1

    # One more kill inside the page's transaction: the load waits on a row lock we hold.
    committed = unfinished_pages(clean_warehouse, open_id)
    assert 0 < committed < 10
    next_page = ids[PAGE * committed : PAGE * (committed + 1)]
    blocker = lock_new_video(open_id, max(next_page))  # ids of a page are written in id order
    child = Child(spec)
    try:
        [pid] = wait_until(lambda: waiting_backends(dag_role["role"]), timeout=60)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
        kills += 1
        assert stored_ids(clean_warehouse, next_page) == set(), "no row of the half-written page is visible"
        assert unfinished_pages(clean_warehouse, open_id) == committed
    finally:
        blocker.rollback()
        blocker.close()
    wait_until(lambda: pid not in role_backends(dag_role["role"]), timeout=30)

    final = run_child(spec)
    assert final.process.returncode == 0, final.stderr[-3000:]
    summary = final.outcome()["result"]
    assert summary["resumed"] is True
    assert summary["pages_total"] == 10
    cursors = [r["body"]["cursor"] for r in sim.admin.requests(endpoint="video_list", open_id=open_id)]
    refetched = len(cursors) - len(set(cursors))
    # Per kill: the pages asked for and not yet committed (being written, or fetched ahead), no more.
    assert refetched <= MAX_UNCOMMITTED_PAGES * kills, (
        f"at most {MAX_UNCOMMITTED_PAGES} pages fetched twice per kill ({kills} kills): {cursors}"
    )
    assert len(set(cursors)) == 10
    after_kills = warehouse_contents(clean_warehouse)
    assert {r[0] for r in after_kills["videos"]} == set(ids)

    reset_data(clean_warehouse)
    assert run_inline(spec)["resumed"] is False  # a clean run, from scratch
    assert warehouse_contents(clean_warehouse) == after_kills
    print(
        f"\nCHAOS sigkill: {kills} kills, {len(cursors)} video/list requests for 10 pages "
        f"({refetched} fetched twice), {sum(len(v) for v in after_kills.values())} rows compared"
    )


def restart_postgres() -> None:
    """Restart the cluster (fast mode: every session is cut, as in a crash or failover)."""
    version = os.listdir("/etc/postgresql")[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )


def wait_for_postgres() -> None:
    def ready() -> bool:
        try:
            psycopg2.connect(f"{SETTINGS.pg_server}/{SETTINGS.warehouse_db}", connect_timeout=2).close()
        except psycopg2.OperationalError:
            return False
        return True

    wait_until(ready, timeout=60, interval=0.2)


def test_postgres_dropping_the_task_mid_batch_fails_it_cleanly_and_the_retry_completes(
    sim, connect, dag_role, frozen_clock, clean_warehouse
) -> None:
    """The warehouse connection is cut while a page's transaction is half done.

    By default the task's backends are ended with ``pg_terminate_backend`` -- to the client exactly
    what a restart does to it (FATAL: terminating connection), without breaking the test runs of
    everyone else on this server. ``TIKTOK_CHAOS_PG_RESTART=1`` (``make soak`` sets it) restarts
    the whole cluster instead.
    """
    open_id = connect(videos=120)
    spec = {"operator": "video_list", "kwargs": {"open_id": open_id, "mode": "full"}}
    run_inline(spec)
    before = {r[0]: r[1:] for r in rows(clean_warehouse, "SELECT id, view_count, like_count FROM tiktok.videos")}
    sim.admin.advance_clock(6 * 3600)  # the counts grow: the next full sync rewrites every row
    truth = {v["id"]: v for v in sim.admin.videos(open_id)}
    assert any((truth[i]["view_count"], truth[i]["like_count"]) != before[i] for i in truth)

    ids = sim.admin.video_ids(open_id)
    page3 = ids[2 * PAGE : 3 * PAGE]
    blocker = lock_video(max(page3))  # rows of page 3 below it in id order are written, then it waits
    child = Child(spec)
    restart = os.environ.get("TIKTOK_CHAOS_PG_RESTART") == "1"
    try:
        wait_until(lambda: waiting_backends(dag_role["role"]), timeout=60)
        # Mid-batch: nothing of page 3 (nor of the pages written with it) is visible; the pages
        # before that batch are committed (page 3 may share a transaction with the pages before it).
        committed = unfinished_pages(clean_warehouse, open_id)
        assert committed <= 2
        visible = {r[0]: r[1:] for r in rows(clean_warehouse, "SELECT id, view_count, like_count FROM tiktok.videos")}
        assert all(visible[i] == before[i] for i in ids[PAGE * committed :])
        if restart:
            restart_postgres()
        else:
            with psycopg2.connect(f"{SETTINGS.pg_server}/{SETTINGS.warehouse_db}") as admin, admin.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND usename = %s",
                    (SETTINGS.warehouse_db, dag_role["role"]),
                )
        assert child.wait(timeout=60) == 1, "a lost database connection is an error Airflow retries"
    finally:
        try:
            blocker.rollback()
            blocker.close()
        except psycopg2.Error:
            pass  # the restart closed it
        wait_for_postgres()
    outcome = child.outcome()
    assert outcome["type"] == "OperationalError"
    assert "terminat" in outcome["error"] or "server closed the connection" in outcome["error"]

    after = {r[0]: r[1:] for r in rows(clean_warehouse, "SELECT id, view_count, like_count FROM tiktok.videos")}
    assert all(after[i] == before[i] for i in ids[PAGE * committed :]), "no half-written batch is visible"
    assert all(after[i] == (truth[i]["view_count"], truth[i]["like_count"]) for i in ids[: PAGE * committed])
    assert unfinished_pages(clean_warehouse, open_id) == committed

    retry = run_child(spec)
    assert retry.process.returncode == 0, retry.stderr[-3000:]
    summary = retry.outcome()["result"]
    assert summary["resumed"] is True
    assert summary["pages"] == 6 - committed
    stored = rows(
        clean_warehouse,
        "SELECT id, view_count, like_count, comment_count, share_count, title, duration FROM tiktok.videos",
    )
    assert len(stored) == 120
    for vid, *values in stored:
        t = truth[vid]
        assert values == [
            t["view_count"],
            t["like_count"],
            t["comment_count"],
            t["share_count"],
            t["title"],
            t["duration"],
        ]
    print(
        f"\nCHAOS postgres: {'restart' if restart else 'pg_terminate_backend'} mid-batch, {len(stored)} rows compared"
    )
