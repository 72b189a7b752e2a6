"""Snapshot, backfills and cover refresh of the same accounts at the same moment, each in its own process.

Seven task processes (what a LocalExecutor with seven free slots would run) start together on two
accounts whose access tokens have just expired: no deadlock, no lost update (the result equals the
simulator's ground truth and a sequential re-run changes nothing), one token refresh per account.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from chaos_support import SETTINGS, Child, rows, run_inline, warehouse_contents
from sqlalchemy import text

pytestmark = pytest.mark.integration


def deadlocks(engine) -> int:
    [(count,)] = rows(engine, "SELECT deadlocks FROM pg_stat_database WHERE datname = :d", d=SETTINGS.warehouse_db)
    return count


def specs(open_id: str, *, incremental: bool = True) -> list[dict]:
    """The tasks of every DAG for one account; with ``incremental``, a daily sync overlapping a full one."""
    tasks = [
        {"operator": "user_info", "kwargs": {"open_id": open_id}},
        {"operator": "video_list", "kwargs": {"open_id": open_id, "mode": "full"}},
        {"operator": "video_query", "kwargs": {"open_id": open_id, "horizon_minutes": 60}},
    ]
    if incremental:
        tasks.append(
            {"operator": "video_list", "kwargs": {"open_id": open_id, "mode": "incremental", "lookback_days": 3650}}
        )
    return tasks


def test_all_dags_on_the_same_accounts_at_once_lose_nothing_and_refresh_each_token_once(
    sim, connect, frozen_clock, clean_warehouse, tmp_path
) -> None:
    reactive, proactive = connect(videos=120), connect(videos=80)
    for open_id in (reactive, proactive):
        run_inline({"operator": "video_list", "kwargs": {"open_id": open_id, "mode": "full"}})
    sim.admin.advance_clock(3600)  # counts move and every cover URL changes
    with clean_warehouse.begin() as conn:
        conn.execute(text("UPDATE tiktok.videos SET cover_expires_at = now() - interval '1 minute'"))
        # One account's token is known to have expired (the hook refreshes before calling), the
        # other's dies at TikTok while the store still trusts it (the hook refreshes on the 401).
        conn.execute(text("UPDATE tiktok.accounts SET access_expires_at = now() WHERE open_id = :o"), {"o": proactive})
    sim.admin.expire_access_tokens(reactive)
    sim.admin.expire_access_tokens(proactive)
    sim.admin.set_faults("video_list", probabilities={"slow": 1.0}, slow_seconds=0.05)
    sim.admin.reset_stats()
    deadlocks_before = deadlocks(clean_warehouse)

    go = tmp_path / "go"
    tasks = [*specs(reactive), *specs(proactive, incremental=False)]
    children = [Child(spec, go_file=go) for spec in tasks]
    for child in children:  # every process has imported Airflow and the operator: start together
        assert child.process.stdout.readline().startswith(b'{"ready"'), child.spec
    go.touch()
    for child in children:
        assert child.wait(timeout=180) == 0, (child.spec, child.stdout[-2000:], child.stderr[-3000:])
    sim.admin.clear_faults()

    stats = sim.admin.stats()
    assert stats["oauth"]["token"]["refresh_token"] == {"ok": 2}, "exactly one refresh per expired token"
    assert deadlocks(clean_warehouse) == deadlocks_before
    summaries = [child.outcome()["result"] for child in children]
    assert sum(s["token_refreshes"] for s in summaries) == 2

    # No lost update: every stored value is the simulator's value at the frozen time.
    truth = {v["id"]: v for open_id in (reactive, proactive) for v in sim.admin.videos(open_id)}
    stored = rows(
        clean_warehouse,
        "SELECT id, view_count, like_count, comment_count, share_count, cover_expires_at, removed_at"
        " FROM tiktok.videos",
    )
    assert len(stored) == len(truth) == 200
    fresh = datetime.now(UTC) + timedelta(hours=5)
    for vid, views, likes, comments, shares, cover_expires, removed in stored:
        t = truth[vid]
        assert (views, likes, comments, shares) == (
            t["view_count"],
            t["like_count"],
            t["comment_count"],
            t["share_count"],
        )
        assert removed is None
        assert cover_expires > fresh
    followers = dict(rows(clean_warehouse, "SELECT open_id, follower_count FROM tiktok.profile_snapshots"))
    assert followers == {o: sim.admin.account(o)["user"]["follower_count"] for o in (reactive, proactive)}

    # And nothing a sequential run would write differently.
    concurrent = warehouse_contents(clean_warehouse)
    for open_id in (reactive, proactive):
        for spec in specs(open_id):
            run_inline(spec)
    assert warehouse_contents(clean_warehouse) == concurrent
    print(
        f"\nCHAOS concurrency: {len(children)} task processes at once, 2 token refreshes, "
        f"{sum(len(v) for v in concurrent.values())} rows compared"
    )
