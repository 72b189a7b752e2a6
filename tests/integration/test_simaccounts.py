"""Connecting many simulator accounts at once (``make up --sim-accounts N``): every grant stored, each its own."""

from __future__ import annotations

from typing import Any


def test_accounts_connected_on_several_threads_through_one_hook_each_get_their_own_working_tokens(
    sim: Any, hook: Any
) -> None:
    from tiktok_tools.simaccounts import connect_existing_sim_accounts

    accounts = [sim.admin.create_account(videos=0, display_name=f"Creator {n}") for n in range(12)]

    connected = connect_existing_sim_accounts(sim, hook.token_store, accounts, threads=4)

    wanted = [account["open_id"] for account in accounts]
    assert connected == wanted  # in the order given, whatever order the threads finished in
    stored = {tokens.open_id: tokens for tokens in (hook.token_store.get(open_id) for open_id in wanted)}
    assert len({tokens.access_token for tokens in stored.values()}) == len(wanted)
    for account in accounts:
        # The simulator knows each token's owner: a grant stored under the wrong account fails here.
        user = hook.get_user_info(account["open_id"], ["open_id", "display_name"])
        assert (user["open_id"], user["display_name"]) == (account["open_id"], account["display_name"])
