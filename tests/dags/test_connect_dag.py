"""Parse-only checks of the connect DAG: it runs promptly, and its params never take a refresh token."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.definitions.param import ParamValidationError

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def connect_dag():
    bag = DagBag(dag_folder=str(DAGS_DIR / "tiktok_connect_account.py"))
    assert bag.import_errors == {}
    return bag.dags["tiktok_connect_account"]


def test_connect_has_its_own_pool_and_outranks_everything_else(connect_dag) -> None:
    from tiktok_ops.bootstrap import CONNECT_POOL

    bag = DagBag(dag_folder=str(DAGS_DIR))
    [task] = connect_dag.tasks
    assert task.pool == CONNECT_POOL == "tiktok_connect", "bootstrap creates the pool the task uses"
    assert task.weight_rule == "absolute"
    others = [dag for dag in bag.dags.values() if dag.dag_id != connect_dag.dag_id]
    assert all(t.pool != task.pool for dag in others for t in dag.tasks), "no other task can fill the connect pool"
    # A task's effective weight is at most the sum over its DAG (its own plus every downstream one).
    assert task.priority_weight > max(sum(t.priority_weight for t in dag.tasks) for dag in others)


def with_conf(dag, conf: dict) -> dict:
    """Validate a run's conf against the DAG's params, as triggering does before storing the run."""
    params = copy.deepcopy(dag.params)
    params.update(conf)
    return params.validate()


@pytest.mark.parametrize("token", ["rft.live-refresh-token-pasted-by-hand", ""])
def test_a_refresh_token_in_the_run_conf_is_refused_at_trigger_time(connect_dag, token: str) -> None:
    with pytest.raises(ParamValidationError, match="refresh_token"):
        with_conf(connect_dag, {"refresh_token": token})


def test_the_variable_and_the_code_are_still_accepted(connect_dag) -> None:
    assert with_conf(connect_dag, {"refresh_token_variable": "tiktok_refresh_token_alice"})["refresh_token"] is None
    with_conf(connect_dag, {"auth_code": "code", "redirect_uri": "https://example.com/cb"})
