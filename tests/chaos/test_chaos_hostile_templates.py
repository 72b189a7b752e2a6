"""Creator text is data: hostile display names, usernames, titles and descriptions through every DAG.

Each hostile string is one account's display name (so it becomes a grid label), and the title and
description of that account's videos; one more account has no display name and a hostile username.
The accounts are connected through the connect DAG, then the three per-account DAGs run end to
end through ``dag.test()`` against the simulator. Afterwards every place a rendered template could
end up is read back: the map indexes and rendered fields in Airflow's metadata DB, the XComs, the
output and the log records of the runs.

Airflow 3.3 renders values that ``expand_kwargs()`` takes from XCom as Jinja when their key is a
template field of the operator (apache/airflow#32272), so before ``open_id`` and ``account_name``
left ``template_fields`` a display name ran as a template in the worker: its result became the
grid label, which Airflow does not mask.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest
from chaos_support import rows, states, xcom

pytestmark = pytest.mark.integration

#: 7919 * 7907: a number that only turns up if one of the templates below was rendered.
PRODUCT = str(7919 * 7907)
HOSTILE = {
    "arithmetic": "{{ 7*7 }}",
    "encryption key": "{{ conn.tiktok_default.extra_dejson.token_encryption_key }}",
    "warehouse connection": "{{ conn.tiktok_warehouse }}",
    "sandbox escape": "{% for x in ().__class__.__base__.__subclasses__() %}{% endfor %}",
    "html": "<script>alert(1)</script>",
    "nul": "nul\x00{{ 7919*7907 }}",
    "long": "{{ 7919*7907 }} " + "\u00e9\u4e2d\U0001f600" * 700,
    "rtl": "\u202e{{ 7919*7907 }} \u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd",
}
#: The account without a display name: the grid shows its username instead.
HOSTILE_USERNAME = "{{ conn.tiktok_default.password }}"
#: The longest grid label Airflow can store (task_instance.rendered_map_index is VARCHAR(250)).
MAP_INDEX_LIMIT = 250
PER_ACCOUNT_TASKS = {
    "tiktok_profile_snapshot": "snapshot_profile",
    "tiktok_video_backfill": "sync_videos",
    "tiktok_cover_refresh": "refresh_covers",
}
TOKEN = re.compile(r"\b(?:act|rft)\.[A-Za-z0-9]{8,}")


def as_stored(text: str) -> str:
    """The text as the warehouse keeps it: the hook strips NUL characters (Postgres text cannot hold them)."""
    return text.replace("\x00", "")


def metadata_rows(query: str, **params: Any) -> list[tuple]:
    from airflow.utils.session import create_session
    from sqlalchemy import text

    with create_session() as session:
        return [tuple(r) for r in session.execute(text(query), params)]


def all_xcoms(run: Any) -> list[Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        found = session.query(XComModel).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()
        return [XComModel.deserialize_value(r) for r in found]


def test_hostile_creator_text_is_data_in_every_dag(
    sim, run_dag, encryption_key, dag_role, clean_warehouse, capfd, caplog
) -> None:
    from tiktok_pipeline.hooks import display_hook
    from tiktok_sim.testing import DEFAULT_REDIRECT_URI

    caplog.set_level(logging.INFO)
    names: dict[str, str] = {}  # open_id -> the display name or username TikTok serves
    for text in [*HOSTILE.values(), None]:
        account = sim.admin.create_account(
            videos=2,
            display_name=text if text is not None else "",
            username=None if text is not None else HOSTILE_USERNAME,
            video_title=text if text is not None else HOSTILE_USERNAME,
            video_description=f"{text}\n{HOSTILE['arithmetic']}" if text is not None else HOSTILE_USERNAME,
        )
        names[account["open_id"]] = text if text is not None else HOSTILE_USERNAME

    runs = []
    for open_id, name in names.items():
        code = sim.admin.mint_code(open_id)
        run = run_dag("tiktok_connect_account", auth_code=code, redirect_uri=DEFAULT_REDIRECT_URI)
        assert str(run.state) == "success", states(run)
        [connected] = xcom(run, "connect")
        assert connected["open_id"] == open_id
        if name != HOSTILE_USERNAME:
            assert connected["display_name"] == as_stored(name), "the connect DAG reports the name as it is"
        runs.append(run)
    for dag_id, conf in [
        ("tiktok_profile_snapshot", {}),
        ("tiktok_video_backfill", {"mode": "full"}),
        ("tiktok_cover_refresh", {"horizon_minutes": 7 * 60}),  # every cover expires within 7 h
    ]:
        run = run_dag(dag_id, **conf)
        assert str(run.state) == "success", states(run)
        mapped = {k: v for k, v in states(run).items() if k[0] == PER_ACCOUNT_TASKS[dag_id]}
        assert sorted(mapped.values()) == ["success"] * len(names), mapped
        runs.append(run)
    out, err = capfd.readouterr()

    # The warehouse holds the text as TikTok served it (minus NUL), bound as data, never run as SQL.
    stored = dict(
        rows(clean_warehouse, "SELECT open_id, coalesce(nullif(display_name, ''), username) FROM tiktok.accounts")
    )
    assert stored == {o: as_stored(n) for o, n in names.items()}
    videos = rows(clean_warehouse, "SELECT open_id, title, video_description, removed_at FROM tiktok.videos")
    assert len(videos) == 2 * len(names)
    for open_id, title, description, removed_at in videos:
        assert removed_at is None
        assert title == as_stored(names[open_id])
        if names[open_id] != HOSTILE_USERNAME:
            assert description == as_stored(f"{names[open_id]}\n{HOSTILE['arithmetic']}")

    # The grid label of every per-account task instance is the name itself: never rendered.
    run_ids = [r.run_id for r in runs]
    selected = {r.run_id: xcom(r, "select_accounts")[0] for r in runs if r.dag_id in PER_ACCOUNT_TASKS}
    for accounts in selected.values():
        assert {a["open_id"] for a in accounts} == set(names)
        for account in accounts:
            assert_label(account["account_name"], as_stored(names[account["open_id"]]))
    labels = metadata_rows(
        "SELECT run_id, map_index, rendered_map_index FROM task_instance WHERE run_id = ANY(:ids) AND map_index >= 0",
        ids=run_ids,
    )
    assert len(labels) == len(PER_ACCOUNT_TASKS) * len(names)
    for run_id, map_index, label in labels:
        assert_label(label, as_stored(names[selected[run_id][map_index]["open_id"]]))

    # Nothing a template could have produced, nor any secret, is anywhere a run leaves text.
    rendered = metadata_rows(
        "SELECT task_id, CAST(rendered_fields AS TEXT) FROM rendered_task_instance_fields WHERE run_id = ANY(:ids)",
        ids=run_ids,
    )
    assert rendered, "rendered fields were written"
    per_account_rendered = [f for task_id, f in rendered if task_id in PER_ACCOUNT_TASKS.values()]
    assert per_account_rendered
    creator_text = [as_stored(n) for n in names.values()]
    assert [t for t in creator_text if any(t in f for f in per_account_rendered)] == [], (
        "no creator text is a rendered field"
    )
    assert not [f for f in per_account_rendered if "49" in f]
    store = display_hook().token_store
    tokens = [t for o in names for t in (store.get(o).access_token, store.get(o).refresh_token)]
    secrets = {
        "token encryption key": encryption_key,
        "client secret": sim.client_secret,
        "warehouse password": dag_role["password"],
        "warehouse URI": dag_role["uri"],
        **{f"token {i}": t for i, t in enumerate(tokens)},
    }
    artifacts = {
        "grid labels": "\n".join(str(label) for *_, label in labels),
        "rendered fields": "\n".join(f for _, f in rendered),
        "xcoms": "\n".join(json.dumps(v, default=str) for r in runs for v in all_xcoms(r)),
        "task output": out + err,
        "log records": caplog.text,
    }
    hits = [f"{what} in {where}" for where, text in artifacts.items() for what, s in secrets.items() if s in text]
    hits += [f"a token in {where}" for where, text in artifacts.items() if TOKEN.search(text)]
    hits += [f"a rendered template ({PRODUCT}) in {where}" for where, text in artifacts.items() if PRODUCT in text]
    hits += [
        f"a template error in {where}"
        for where, text in artifacts.items()
        if "SecurityError" in text or "Exception rendering Jinja template" in text
    ]
    assert hits == []


def assert_label(label: str | None, name: str) -> None:
    """A grid label shows ``name`` as it is; a long one may be cut, to a prefix Airflow can store."""
    if len(name) <= 64:
        assert label == name, (label, name)
    else:
        assert label is not None and len(label) <= MAP_INDEX_LIMIT, (label or "")[:80]
        assert label == name or (label.endswith("\u2026") and name.startswith(label[:-1])), label[:80]
