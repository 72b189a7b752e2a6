"""Audit 2 reproducers: secrets that still reach a run's configuration or its log."""

from __future__ import annotations

import pytest
from chaos_support import states

pytestmark = pytest.mark.integration


@pytest.mark.xfail(strict=True, reason="audit2: a refresh token pasted as the Variable name is logged")
def test_a_refresh_token_pasted_as_the_variable_name_is_refused_and_never_echoed(
    sim, run_dag, clean_warehouse, capfd
) -> None:
    """The likeliest slip on the connect form: the token itself in the "Variable holding a refresh token" box."""
    from airflow.utils.session import create_session
    from sqlalchemy import text

    account = sim.admin.create_account(videos=1)["open_id"]
    token = sim.get_tokens(account).refresh_token
    try:
        run = run_dag("tiktok_connect_account", refresh_token_variable=token)
    except Exception:  # refused at trigger time: what we want
        run = None
    out, err = capfd.readouterr()
    with create_session() as session:
        confs = [str(c) for (c,) in session.execute(text("SELECT CAST(conf AS TEXT) FROM dag_run"))]
    leaks = [where for where, blob in (("task output", out + err), ("dag_run.conf", "\n".join(confs))) if token in blob]
    print("state:", run and states(run), "leaks:", leaks)
    assert leaks == []
