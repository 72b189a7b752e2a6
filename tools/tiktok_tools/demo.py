"""`make demo`: the four DAGs end to end through Airflow, against the simulator, into Postgres.

Starts the TikTok simulator with a few accounts and a few thousand videos, connects every account
through ``tiktok_connect_account``, runs ``tiktok_video_backfill`` (full), ``tiktok_profile_snapshot``
and ``tiktok_cover_refresh`` with ``dag.test()``, prints a summary read back from the warehouse, and
stops the simulator. Safe to run again: the same seed gives the same accounts, and every load is
an idempotent upsert.

With no Postgres server (no ``TIKTOK_PG_SERVER``, nothing on 127.0.0.1:5432) it runs on the
embedded server of :mod:`tiktok_tools.pgserver` (``make bootstrap`` starts it), and stops that
server at the end unless ``make up`` is using it too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from tiktok_ops import settings as local_settings
from tiktok_tools import pgserver

SEED = 20261125
ACCOUNTS = 3
VIDEOS = 1500  # account i gets VIDEOS // (i + 1): 1500 + 750 + 500
COVER_TTL = 45 * 60  # shorter than the DAG's 60-minute horizon, so the refresh has work to do


#: What a terminal would act on rather than show: C0/C1 controls (ESC starts colour, cursor and
#: title sequences; CR and LF rewrite lines), and the Unicode marks that reorder or split text.
_TERMINAL_UNSAFE = frozenset(
    (
        *range(0x20), 0x7F, *range(0x80, 0xA0),  # C0 (ESC, BEL, CR, LF...), DEL, C1 (CSI, OSC...)
        0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A),  # bidi marks, overrides
        0x2028, 0x2029,  # line and paragraph separators
    )
)  # fmt: skip


def printable(text: object, limit: int = 60) -> str:
    """Return creator text as a terminal should show it: data, never control sequences.

    Display names, bios and titles are whatever a creator typed: each control character is shown
    escaped (``\\x1b``), and long text is cut. HTML needs no escaping in a terminal, so
    ``<script>`` stays as typed; a page of ours would ``html.escape`` it instead.
    """
    shown = "".join(
        (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}") if ord(c) in _TERMINAL_UNSAFE else c
        for c in str(text)
    )
    return shown if len(shown) <= limit else shown[: limit - 1] + "\u2026"


def _say(text: str) -> None:
    print(text, flush=True)


def _connection() -> Any:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection("tiktok_default")
    except AirflowNotFoundException:
        sys.exit("demo: the tiktok_default connection is missing; run `make bootstrap` first.")


def _run(dags: Any, dag_id: str, **conf: Any) -> tuple[str, float, dict[str, Any]]:
    """Run a DAG through dag.test(); return its state, wall time and its summarize task's result."""
    from tiktok_tools.dagrun import summary

    run, took = dags.timed(dag_id, **conf)
    return str(run.state), took, summary(run)


def _summary(engine: Any) -> list[tuple[Any, ...]]:
    from sqlalchemy import text

    sql = """
        SELECT a.display_name, a.status, array_to_string(a.scopes, ' '),
               (SELECT count(*) FROM tiktok.videos v WHERE v.open_id = a.open_id AND v.removed_at IS NULL),
               (SELECT count(*) FROM tiktok.video_snapshots s JOIN tiktok.videos v ON v.id = s.video_id
                 WHERE v.open_id = a.open_id),
               (SELECT count(*) FROM tiktok.profile_snapshots p WHERE p.open_id = a.open_id),
               (SELECT follower_count FROM tiktok.profile_snapshots p WHERE p.open_id = a.open_id
                 ORDER BY snapshot_date DESC LIMIT 1),
               (SELECT count(*) FROM tiktok.videos v WHERE v.open_id = a.open_id
                 AND v.cover_expires_at > now())
        FROM tiktok.accounts a ORDER BY a.display_name
    """
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def _archive_summary(engine: Any) -> dict[str, Any]:
    """What the cover archive holds after the demo: images per kind, stored objects, their bytes, where."""
    from sqlalchemy import text

    from tiktok_pipeline.archive import archive_settings

    with engine.connect() as conn:
        kinds = dict(
            conn.execute(text("SELECT kind, count(DISTINCT subject_id) FROM tiktok.cover_archive GROUP BY kind")).all()
        )
        blobs, size = conn.execute(text("SELECT count(*), coalesce(sum(bytes), 0) FROM tiktok.archive_blobs")).one()
    return {
        "covers": kinds.get("cover", 0),
        "avatars": kinds.get("avatar", 0),
        "blobs": blobs,
        "bytes": size,
        "base": archive_settings().base,
    }


def archive_line(archive: dict[str, Any]) -> str:
    """The demo's line about the cover archive."""
    return (
        f"Cover archive: {archive['covers']:,} covers and {archive['avatars']} avatars archived "
        f"({archive['blobs']:,} images, {archive['bytes'] / 1024:,.0f} KiB, stored once by SHA-256) "
        f"in {archive['base']}"
    )


def summary_table(rows: list[tuple[Any, ...]]) -> list[str]:
    """Return the lines of the per-account table (rows as :func:`_summary` reads them)."""
    header = ("account", "status", "videos", "video snapshots", "profile snapshots", "followers", "valid covers")
    table = [header] + [
        (
            printable(r[0] if r[0] is not None else ""),
            str(r[1]),
            *(f"{v:,}" if isinstance(v, int) else str(v) for v in r[3:]),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for i, row in enumerate(table):
        cells = [c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  " + "  ".join(cells))
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tiktok_tools.demo", description=__doc__)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--videos", type=int, default=VIDEOS, help="videos of the first account")
    args = parser.parse_args(argv)

    home = local_settings.Settings.from_env().airflow_home
    holder = f"demo-{os.getpid()}"
    try:
        pgserver.ensure(home, holder, pid=os.getpid())
    except pgserver.EmbeddedPostgresError as exc:
        sys.exit(f"demo: {exc}")
    try:
        return _demo(args)
    finally:
        _dispose_airflow_engines()
        if pgserver.release(home, holder):
            _say(f"demo: stopped the embedded PostgreSQL server (its data stays in {pgserver.Embedded(home).pgdata})")


def _dispose_airflow_engines() -> None:
    """Close Airflow's pooled connections, so nothing talks to a server that is about to stop."""
    if "airflow.settings" in sys.modules:
        sys.modules["airflow.settings"].dispose_orm()


def _demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    # The simulator's CDN is local: no need to space the cover downloads as for TikTok's.
    os.environ.setdefault("AIRFLOW__TIKTOK__COVER_ARCHIVE_PACE_SECONDS", "0")
    s = local_settings.apply(server_context=True)
    began = time.monotonic()

    from tiktok_sim.testing import start_simulator
    from tiktok_tools.dagrun import DagImportError, Dags
    from tiktok_tools.simaccounts import connect_conf
    from tiktok_warehouse.db import get_engine

    conn = _connection()
    host = urlsplit(conn.host or "")
    if (host.hostname, host.port) != (s.sim_host, s.sim_port):
        sys.exit(
            f"demo: tiktok_default points at {conn.host}, not the simulator at {s.sim_url}. The demo only "
            "runs against the simulator; use another TIKTOK_AIRFLOW_DB/TIKTOK_WAREHOUSE_DB for it."
        )
    _say(f"demo: starting the TikTok simulator on {s.sim_url} ({args.accounts} accounts)")
    sim = start_simulator(
        host=s.sim_host,
        port=s.sim_port,
        seed=SEED,
        accounts=args.accounts,
        videos=args.videos,
        client_key=conn.login,
        client_secret=conn.password,
        cover_ttl=COVER_TTL,
    )
    failures: list[str] = []
    timings: list[tuple[str, str, float]] = []
    results: dict[str, dict[str, Any]] = {}
    try:
        try:
            dags = Dags()
        except DagImportError as exc:
            sys.exit(f"demo: {exc}")
        for account in sim.admin.accounts():
            conf = connect_conf(sim.admin, account["open_id"])
            state, took, result = _run(dags, "tiktok_connect_account", **conf)
            timings.append((f"tiktok_connect_account ({printable(account['display_name'])})", state, took))
            _say(f"demo: {timings[-1][0]}: {state} in {took:.1f}s, scopes {', '.join(result.get('scopes', []))}")
        for dag_id, conf in [
            ("tiktok_video_backfill", {"mode": "full"}),
            ("tiktok_profile_snapshot", {}),
            ("tiktok_cover_refresh", {}),
        ]:
            state, took, result = _run(dags, dag_id, **conf)
            timings.append((dag_id, state, took))
            results[dag_id] = result
            _say(f"demo: {dag_id}{' (full)' if conf else ''}: {state} in {took:.1f}s")
        failures = [name for name, state, _ in timings if state != "success"]
        stats = sim.admin.stats()
        rows = _summary(get_engine("tiktok_warehouse"))
        archive = _archive_summary(get_engine("tiktok_warehouse"))
    finally:
        sim.stop()

    _say("")
    _say("Warehouse (tiktok schema) after the demo")
    for line in summary_table(rows):
        _say(line)
    _say("")
    _say("TikTok API calls (counted by the simulator)")
    for endpoint, numbers in sorted(stats["endpoints"].items()):
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(numbers["statuses"].items()))
        _say(f"  {endpoint:<12} {numbers['requests']:>6}   ({statuses})")
    _say(f"  rate-limited (429): {stats['rate_limited']}")
    backfill = results.get("tiktok_video_backfill", {})
    covers = results.get("tiktok_cover_refresh", {})
    _say("")
    _say(
        f"Backfill: {backfill.get('pages', 0)} pages, {backfill.get('inserted', 0):,} videos inserted, "
        f"{backfill.get('updated', 0):,} updated, {backfill.get('unchanged', 0):,} unchanged, "
        f"{backfill.get('removed', 0)} marked removed"
    )
    _say(
        f"Cover refresh: {covers.get('updated', 0):,} covers refreshed ({covers.get('requested', 0):,} queried, "
        f"{covers.get('removed', 0)} gone); the simulator's cover URLs live {COVER_TTL // 60} min here "
        "so the hourly refresh has work (TikTok's live 6 h)"
    )
    _say(archive_line(archive))
    _say("")
    _say(
        f"demo: {'FAILED: ' + ', '.join(failures) if failures else 'all runs succeeded'} "
        f"in {time.monotonic() - began:.0f}s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
