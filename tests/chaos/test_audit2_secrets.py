"""Audit 2 reproducers: secrets that still reach a run's configuration or its log."""

from __future__ import annotations

import pytest
from chaos_support import states

pytestmark = pytest.mark.integration


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


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("refresh_token_variable", "rft." + "a1B2" * 12),
        ("refresh_token_variable", "tiktok_refresh_token_alice.rft"),
        ("refresh_token_variable", "tiktok_warehouse_password"),  # any other Variable: never sent to TikTok
        ("auth_code", "rft." + "a1B2" * 12),
        ("code_verifier", " act." + "a1B2" * 12),
        ("redirect_uri", "rft." + "a1B2" * 12),
    ],
)
def test_the_connect_form_refuses_token_shapes_and_foreign_variables(chaos_dags, field, value) -> None:
    import copy

    from airflow.sdk.definitions.param import ParamValidationError

    params = copy.deepcopy(chaos_dags["tiktok_connect_account"].params)
    with pytest.raises(ParamValidationError, match=field):
        params.update({field: value})
        params.validate()


def test_the_connect_form_still_takes_our_variables_and_codes(chaos_dags) -> None:
    import copy

    for conf in (
        {"refresh_token_variable": "tiktok_refresh_token_alice-2"},
        {"auth_code": "a.code*!with-odd_chars", "redirect_uri": "https://example.com/cb", "code_verifier": "x" * 43},
    ):
        params = copy.deepcopy(chaos_dags["tiktok_connect_account"].params)
        params.update(conf)
        params.validate()


def test_a_token_anywhere_in_the_conf_is_refused_unused_and_never_echoed(sim, run_dag, clean_warehouse, capfd) -> None:
    """Keys that are not params get past the form: the task finds the token there and stops before any I/O."""
    from tiktok_sim.testing import DEFAULT_REDIRECT_URI, token_fingerprint

    account = sim.admin.create_account(videos=1)["open_id"]
    pasted = sim.get_tokens(account)
    code = sim.admin.mint_code(sim.admin.create_account(videos=1)["open_id"])
    sim.admin.reset_stats()
    capfd.readouterr()
    run = run_dag(
        "tiktok_connect_account",
        auth_code=code,
        redirect_uri=DEFAULT_REDIRECT_URI,
        notes={"for the record": [f"my token is {pasted.refresh_token}"]},
    )
    out, err = capfd.readouterr()
    assert states(run)[("connect", -1)] == "failed"
    assert sim.admin.stats()["oauth"]["token"] == {}, "the code was not spent"
    assert pasted.refresh_token not in out + err
    assert "treat that token as leaked" in out + err and "revoke" in out + err
    [issued] = [t for t in sim.admin.tokens(account) if t["fingerprint"] == token_fingerprint(pasted.refresh_token)]
    assert issued["status"] == "active", "nothing was sent to TikTok with it"
