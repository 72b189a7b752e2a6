"""Connect simulator accounts: mint an authorization code as if the user had approved, and spend it.

One place for the demo, ``make up``, the benchmark, the soak and the tests. Two ways to spend a code:

- :func:`connect_conf` gives the ``tiktok_connect_account`` DAG's conf (or the pipeline's
  ``connect_account`` params) for an account: the code goes through the DAG, as in production;
- :func:`connect_sim_account` spends it through a hook's token endpoint and saves the grant in the
  hook's token store: the quick way when the connect DAG is not what is being looked at.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from tiktok_provider.auth import TokenGrant
from tiktok_sim.testing import DEFAULT_REDIRECT_URI, DEFAULT_SCOPES


def connect_conf(admin: Any, open_id: str, scopes: Iterable[str] | str = DEFAULT_SCOPES) -> dict[str, str]:
    """Mint a code for ``open_id`` with ``scopes``; return the connect DAG's conf that spends it.

    :param admin: a ``tiktok_sim.testing.SimulatorAdmin`` (``sim.admin``).
    """
    code = admin.mint_code(open_id, scopes, DEFAULT_REDIRECT_URI)
    return {"auth_code": code, "redirect_uri": DEFAULT_REDIRECT_URI}


def connect_sim_account(
    admin: Any,
    hook: Any,
    *,
    open_id: str | None = None,
    videos: int = 30,
    scopes: Iterable[str] | str = DEFAULT_SCOPES,
    display_name: str | None = None,
) -> str:
    """Connect an account through ``hook``'s token endpoint and save its grant; return its open_id.

    :param open_id: an existing simulator account; default: a new one with ``videos`` videos.
    """
    if open_id is None:
        account = admin.create_account(videos=videos, display_name=display_name)
    else:
        account = admin.account(open_id)
    return _connect(admin, hook, account, scopes)


def _connect(admin: Any, hook: Any, account: dict[str, Any], scopes: Iterable[str] | str = DEFAULT_SCOPES) -> str:
    conf = connect_conf(admin, account["open_id"], scopes)
    grant = hook.exchange_code(conf["auth_code"], conf["redirect_uri"])
    hook.token_store.save_grant(grant, display_name=account.get("display_name"))
    return grant.open_id


def connect_sim_accounts(admin: Any, hook: Any, videos: Sequence[int]) -> list[str]:
    """Create one account per entry of ``videos``, connect each through ``hook``; return their open_ids."""
    return [connect_sim_account(admin, hook, videos=count) for count in videos]


def connect_existing_sim_accounts(
    sim: Any, store: Any, accounts: Sequence[dict[str, Any]], *, threads: int = 4
) -> list[str]:
    """Connect each of ``accounts`` (as ``admin.accounts()`` lists them) and store its grant; return their open_ids.

    For seeding thousands of accounts (``make up --sim-accounts 2000``): each code is minted just
    before it is spent at the simulator's token endpoint, ``threads`` at once, and the grant goes
    into ``store`` (a hook's token store). Not through a hook, which has Airflow mask every token it
    sees: Airflow's masker compiles one regex of every secret so far on each new one, so 2,000
    accounts (6,000 secrets) in one process would take most of an hour. Answers of 429 (the
    simulator's rate limit, which holds for its token endpoint too) are waited out.

    :param sim: a ``tiktok_sim.testing`` simulator connection (``admin``, ``exchange_code``).
    """

    def connect(account: dict[str, Any]) -> str:
        while True:
            answer = sim.exchange_code(connect_conf(sim.admin, account["open_id"])["auth_code"])
            if answer.get("error") != "temporarily_unavailable":
                break
            time.sleep(1.0)  # rate-limited (the code was not used): a fresh one is minted for the next try
        if "access_token" not in answer:
            raise RuntimeError(f"the simulator refused to connect {account['open_id']}: {answer.get('error')}")
        grant = TokenGrant(
            open_id=answer["open_id"],
            access_token=answer["access_token"],
            expires_in=answer["expires_in"],
            refresh_token=answer["refresh_token"],
            refresh_expires_in=answer["refresh_expires_in"],
            scopes=frozenset(answer["scope"].split(",")),
            obtained_at=datetime.now(UTC),
            log_id=answer.get("log_id"),
        )
        store.save_grant(grant, display_name=account.get("display_name"))
        return grant.open_id

    if threads <= 1 or len(accounts) <= 1:
        return [connect(account) for account in accounts]
    with ThreadPoolExecutor(threads, thread_name_prefix="connect") as pool:
        return list(pool.map(connect, accounts))


def simulator_connections(sim: Any, *, encryption_key: str, warehouse_uri: str, **extra: Any) -> dict[str, str]:
    """Return ``AIRFLOW_CONN_*`` variables: ``tiktok_default`` on a running simulator, and the warehouse.

    :param sim: a ``tiktok_sim.testing`` simulator (base_url, client_key, client_secret).
    :param extra: the hook's tuning (rate_limit_per_minute, max_backoff_seconds, ...).
    """
    tiktok = {
        "conn_type": "tiktok",
        "host": sim.base_url,
        "login": sim.client_key,
        "password": sim.client_secret,
        "extra": {"token_encryption_key": encryption_key, **extra},
    }
    return {"AIRFLOW_CONN_TIKTOK_DEFAULT": json.dumps(tiktok), "AIRFLOW_CONN_TIKTOK_WAREHOUSE": warehouse_uri}
