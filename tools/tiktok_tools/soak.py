"""Soak the DAGs: many rounds of runs under faults, a changing world, killed tasks; then verify.

``make soak`` (or ``python -m tiktok_tools.soak --minutes 20``) runs for a while against its own
simulator and its own databases (``airflow_soak`` and ``tiktok_soak`` unless TIKTOK_AIRFLOW_DB /
TIKTOK_WAREHOUSE_DB say otherwise), writing as the least-privilege DAG role. Each round does one of:

- run the snapshot, backfill (full or incremental) or cover refresh DAG with ``--fault-rate`` of
  every answer failing (429, 500, HTML 503, cut-off JSON, slower than the read timeout);
- change the world: move the clock (tokens expire, covers go stale, counts grow), post, delete or
  hide videos, expire an account's access tokens;
- SIGKILL a backfill task process at a random moment, then let the DAG resume it;
- with ``--pg-restart``: restart Postgres while a backfill is writing (every session on the server
  is cut: do not use it on a shared server).

At the end the faults stop, the clock freezes, one clean pass runs, and the warehouse is checked
against the simulator's ground truth: every public video live with its exact counts and a fresh
cover, every deleted or hidden one marked removed, every profile's counts, no unfinished sync, every
account still active, and no issued token anywhere in a pg_dump of the warehouse. The tests in
tests/chaos cover the same ground in minutes; this runs it long and random. Exit status 0 = verified.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

os.environ.setdefault("TIKTOK_AIRFLOW_DB", "airflow_soak")
os.environ.setdefault("TIKTOK_WAREHOUSE_DB", "tiktok_soak")

from tiktok_ops import settings as local_settings

DATA_ENDPOINTS = ("user_info", "video_list", "video_query")
DATA_KINDS = ("rate_limit", "internal_error", "html_503", "truncated", "slow")
#: A token answer lost after TikTok rotated the refresh token cannot be replayed: no cut-off
#: bodies or answers slower than the read timeout on the token endpoint.
TOKEN_KINDS = ("rate_limit", "internal_error", "html_503", "slow")
TOKEN = re.compile(r"(?:act|rft)\.[A-Za-z0-9]{20,}")


def log(message: str) -> None:
    print(f"[soak {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


# -- the child: one operator in its own process, so it can be killed --------------------------


def run_child(spec: dict[str, Any]) -> int:
    local_settings.apply()
    from tiktok_pipeline.operators import TikTokVideoListToPostgresOperator

    TikTokVideoListToPostgresOperator(task_id="soak_child", **spec).execute({})
    return 0


# -- setup ------------------------------------------------------------------------------------


def prepare(s: local_settings.Settings) -> None:
    from tiktok_ops import bootstrap

    bootstrap.ensure_databases(s)
    bootstrap.migrate_airflow()
    bootstrap.ensure_pool()
    url = s.database_url(s.warehouse_db)
    subprocess.run([sys.executable, "-m", "tiktok_warehouse.migrate", "upgrade", "--url", url], check=True)
    import psycopg2

    conn = psycopg2.connect(f"{s.pg_server}/{s.warehouse_db}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "TRUNCATE tiktok.video_snapshots, tiktok.sync_seen_videos, tiktok.sync_state, tiktok.videos,"
            " tiktok.profile_snapshots, tiktok.accounts"
        )
    conn.close()


def connections(s: local_settings.Settings, sim: Any, role: str, password: str) -> dict[str, str]:
    from cryptography.fernet import Fernet
    from sqlalchemy.engine import make_url

    warehouse = make_url(s.database_url(s.warehouse_db, driver="postgresql")).set(username=role, password=password)
    from tiktok_tools.simaccounts import simulator_connections

    return simulator_connections(
        sim,
        encryption_key=Fernet.generate_key().decode(),
        warehouse_uri=warehouse.render_as_string(hide_password=False),
        rate_limit_per_minute=100_000,
        max_backoff_seconds=0.5,
        max_attempts=8,
        read_timeout=1.0,
    )


class Soak:
    """The state of one soak: simulator, DAGs, accounts, counters."""

    def __init__(self, sim: Any, rng: random.Random, fault_rate: float) -> None:
        from tiktok_tools.dagrun import DagImportError, Dags

        self.sim = sim
        self.rng = rng
        self.fault_rate = fault_rate
        try:
            self.dags = Dags(local_settings.ROOT / "dags", instant_retries=True)
        except DagImportError as exc:
            raise SystemExit(str(exc)) from None
        self.accounts: list[str] = []
        self.counts: Counter[str] = Counter()

    # -- running ------------------------------------------------------------------------------

    def run(self, dag_id: str, **conf: Any) -> bool:
        from tiktok_tools.dagrun import task_instances, xcom

        run = self.dags.run(dag_id, **conf)
        for summary in xcom(run, "summarize"):
            if isinstance(summary, dict):
                self.counts["hook retries"] += sum(summary.get("retries", {}).values())
                self.counts["token refreshes"] += summary.get("token_refreshes", 0)
        tis = task_instances(run)
        self.counts["airflow task retries"] += sum(max(0, ti.try_number - 1) for ti in tis)
        failed = [f"{ti.task_id}[{ti.map_index}]" for ti in tis if ti.state == "failed"]
        self.counts["dag runs"] += 1
        if failed:
            self.counts["failed dag runs"] += 1
            log(f"{dag_id} failed: {failed}")
        return not failed

    def faults(self, on: bool) -> None:
        self.sim.admin.clear_faults()
        if not on:
            return
        data = {kind: self.fault_rate / len(DATA_KINDS) for kind in DATA_KINDS}
        token = {kind: self.fault_rate / len(TOKEN_KINDS) for kind in TOKEN_KINDS}
        for endpoint in DATA_ENDPOINTS:
            self.sim.admin.set_faults(endpoint, probabilities=data, slow_seconds=1.5)
        self.sim.admin.set_faults("oauth_token", probabilities=token, slow_seconds=0.2)

    def connect(self, videos: int) -> None:
        from tiktok_tools.simaccounts import connect_conf

        open_id = self.sim.admin.create_account(videos=videos)["open_id"]
        if not self.run("tiktok_connect_account", **connect_conf(self.sim.admin, open_id)):
            raise SystemExit(f"could not connect {open_id}")
        self.accounts.append(open_id)

    # -- rounds -------------------------------------------------------------------------------

    def round(self, pg_restart: bool) -> None:
        choice = self.rng.choices(
            ["snapshot", "backfill", "covers", "world", "kill", "restart"],
            weights=[2, 3, 2, 3, 1, 1 if pg_restart else 0],
        )[0]
        self.counts[f"round: {choice}"] += 1
        if choice == "snapshot":
            self.run("tiktok_profile_snapshot")
        elif choice == "backfill":
            mode = self.rng.choice(["full", "incremental"])
            self.run("tiktok_video_backfill", mode=mode, lookback_days=self.rng.choice([1, 7, 30, 3650]))
        elif choice == "covers":
            self.run("tiktok_cover_refresh", horizon_minutes=self.rng.choice([60, 180, 420]))
        elif choice == "world":
            self.change_world()
        else:
            self.interrupt_backfill(restart=choice == "restart")

    def change_world(self) -> None:
        admin = self.sim.admin
        open_id = self.rng.choice(self.accounts)
        what = self.rng.choice(["clock", "post", "delete", "hide", "expire"])
        if what == "clock":
            admin.advance_clock(self.rng.uniform(0.25, 2) * 3600)
        elif what == "post":
            admin.add_videos(open_id, self.rng.randint(1, 5))
        elif what == "expire":
            admin.expire_access_tokens(open_id)
        else:
            ids = admin.video_ids(open_id)
            if len(ids) > 5:
                video = self.rng.choice(ids)
                admin.delete_video(video) if what == "delete" else admin.privatise_video(video)
        self.counts[f"world: {what}"] += 1

    def interrupt_backfill(self, *, restart: bool) -> None:
        open_id = self.rng.choice(self.accounts)
        spec = json.dumps({"open_id": open_id, "mode": "full"})
        child = subprocess.Popen(
            [sys.executable, "-m", "tiktok_tools.soak", "--child", spec],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        # Strike after a few pages of this task (importing Airflow takes it a few seconds first).
        def pages() -> int:
            return self.sim.admin.stats()["endpoints"].get("video_list", {}).get("requests", 0)

        target, deadline = pages() + self.rng.randint(1, 3), time.monotonic() + 60
        while pages() < target and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(self.rng.uniform(0, 0.3))
        if restart:
            version = os.listdir("/etc/postgresql")[0]
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True)
            self.counts["postgres restarts"] += 1
            self.reset_airflow_sessions()
        else:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
                self.counts["SIGKILLs"] += 1
            else:
                self.counts["backfills that finished before the kill"] += 1
        child.wait(120)
        self.run("tiktok_video_backfill", mode="whole_history")  # the retry resumes where the task stopped

    @staticmethod
    def reset_airflow_sessions() -> None:
        from airflow import settings

        for _ in range(60):
            if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode == 0:
                break
            time.sleep(1)
        settings.Session.remove()
        settings.engine.dispose()

    # -- verification -------------------------------------------------------------------------

    def verify(self, engine: Any) -> list[str]:
        """Compare the warehouse with the simulator's ground truth; return what is wrong."""
        from sqlalchemy import text

        problems: list[str] = []
        fresh = datetime.fromtimestamp(self.sim.admin.now(), UTC) + timedelta(hours=5)  # TikTok's clock
        with engine.connect() as conn:
            for open_id in self.accounts:
                truth = {v["id"]: v for v in self.sim.admin.videos(open_id, limit=100_000)}
                stored = {
                    r.id: r
                    for r in conn.execute(
                        text(
                            "SELECT id, view_count, like_count, comment_count, share_count, title,"
                            " cover_expires_at, removed_at, missing_since FROM tiktok.videos WHERE open_id = :o"
                        ),
                        {"o": open_id},
                    )
                }
                self.counts["videos verified"] += len(stored)
                for vid, t in truth.items():
                    row = stored.get(vid)
                    if row is None or row.removed_at is not None:
                        problems.append(f"{open_id}: public video {vid} missing or marked removed")
                        continue
                    counts = (row.view_count, row.like_count, row.comment_count, row.share_count)
                    if counts != (t["view_count"], t["like_count"], t["comment_count"], t["share_count"]):
                        problems.append(f"{open_id}: video {vid} counts {counts} differ from TikTok's")
                    if row.title != t["title"] or row.cover_expires_at is None or row.cover_expires_at < fresh:
                        problems.append(f"{open_id}: video {vid} title or cover is stale")
                for vid in set(stored) - set(truth):
                    # A removal is confirmed by a later run an hour on: until then it is pending.
                    if stored[vid].removed_at is None and stored[vid].missing_since is None:
                        problems.append(f"{open_id}: video {vid} is gone from TikTok but neither pending nor removed")
                user = self.sim.admin.account(open_id)["user"]
                row = conn.execute(
                    text(
                        "SELECT follower_count, video_count FROM tiktok.profile_snapshots WHERE open_id = :o"
                        " ORDER BY snapshot_date DESC LIMIT 1"
                    ),
                    {"o": open_id},
                ).first()
                if row is None or tuple(row) != (user["follower_count"], user["video_count"]):
                    problems.append(f"{open_id}: profile snapshot {row} differs from TikTok's")
            unfinished = conn.execute(text("SELECT count(*) FROM tiktok.sync_state WHERE finished_at IS NULL"))
            if (n := unfinished.scalar()) != 0:
                problems.append(f"{n} syncs left unfinished")
            statuses = dict(conn.execute(text("SELECT open_id, status FROM tiktok.accounts")).all())
            problems += [f"{o}: status {st}" for o, st in statuses.items() if st != "active"]
        return problems

    def leaked_tokens(self, database_url: str) -> int:
        from tiktok_sim.testing import token_fingerprint

        issued = {t["fingerprint"] for o in self.accounts for t in self.sim.admin.tokens(o)}
        self.counts["issued tokens scanned for"] = len(issued)
        dump = subprocess.run(["pg_dump", database_url], check=True, capture_output=True).stdout.decode(
            errors="replace"
        )
        return sum(token_fingerprint(t) in issued for t in TOKEN.findall(dump))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the random rounds run")
    parser.add_argument("--accounts", type=int, default=4)
    parser.add_argument("--videos", type=int, default=300, help="videos per account at the start")
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--pg-restart", action="store_true", help="also restart Postgres mid-run (cuts every session)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(json.loads(args.child))

    s = local_settings.apply()
    if "soak" not in s.warehouse_db or "soak" not in s.airflow_db:
        # The soak empties its warehouse first: never let it near a real one.
        parser.error(f"the databases' names must contain 'soak' (got {s.airflow_db}, {s.warehouse_db})")
    started = time.monotonic()
    log(f"seed {args.seed}; databases {s.airflow_db} and {s.warehouse_db}; {args.minutes} min of rounds")
    prepare(s)
    from sqlalchemy import create_engine

    from tiktok_ops.dag_role import create_dag_role
    from tiktok_sim.testing import running_simulator

    role, password = f"{s.warehouse_db}_dags", secrets.token_urlsafe(18)
    create_dag_role(s.pg_server, s.warehouse_db, role, password)
    engine = create_engine(s.database_url(s.warehouse_db), pool_pre_ping=True)
    with running_simulator(seed=args.seed, accounts=0, rate_limit=100_000, rate_window=60) as sim:
        os.environ.update(connections(s, sim, role, password))
        soak = Soak(sim, random.Random(args.seed), args.fault_rate)
        for _ in range(args.accounts):
            soak.connect(args.videos)
        soak.run("tiktok_video_backfill", mode="whole_history")
        if args.pg_restart:  # at least once, whatever the dice say
            soak.faults(on=True)
            soak.interrupt_backfill(restart=True)
        deadline = time.monotonic() + args.minutes * 60
        rounds = 0
        while time.monotonic() < deadline:
            rounds += 1
            soak.faults(on=True)
            soak.round(args.pg_restart)
        log(f"{rounds} rounds done; final clean pass")
        soak.faults(on=False)
        sim.admin.freeze_clock()
        stats = sim.admin.stats()
        final = [
            soak.run("tiktok_video_backfill", mode="whole_history"),
            soak.run("tiktok_cover_refresh", horizon_minutes=420),
            soak.run("tiktok_profile_snapshot"),
        ]
        problems = soak.verify(engine) if all(final) else ["the final clean pass failed"]
        leaks = soak.leaked_tokens(s.database_url(s.warehouse_db, driver="postgresql"))
        if leaks:
            problems.append(f"{leaks} issued tokens found in a pg_dump of the warehouse")
    engine.dispose()
    faults = {e: sum(v["faults"].values()) for e, v in stats["endpoints"].items() if v["faults"]}
    log(f"requests {stats['total']}, faults injected {sum(faults.values())} {faults}")
    log(", ".join(f"{k} {v}" for k, v in sorted(soak.counts.items())))
    log(f"took {(time.monotonic() - started) / 60:.1f} min")
    for problem in problems[:50]:
        log(f"PROBLEM: {problem}")
    log("VERIFIED: the warehouse equals TikTok's ground truth" if not problems else f"{len(problems)} problems")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
