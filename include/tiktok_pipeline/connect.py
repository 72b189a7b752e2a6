"""Connect or reconnect an account: exchange or refresh, store encrypted tokens, fetch the profile."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

log = logging.getLogger(__name__)

PROFILE_FIELDS = ("open_id", "display_name", "avatar_url", "username")


def connect_account(params: dict[str, Any], *, tiktok_conn_id: str) -> dict[str, Any]:
    """Run the connect flow for one set of DAG params; return open_id, scopes and the display name."""
    from airflow.sdk.log import mask_secret

    from tiktok_provider.errors import TikTokError
    from tiktok_provider.hooks.tiktok import TikTokDisplayHook
    from tiktok_warehouse.db import get_engine
    from tiktok_warehouse.loads import Warehouse
    from tiktok_warehouse.tokens import TokenStoreError

    code = (params.get("auth_code") or "").strip()
    redirect_uri = (params.get("redirect_uri") or "").strip()
    variable = (params.get("refresh_token_variable") or "").strip()
    refresh_token = _refresh_token_from(variable) if variable else (params.get("refresh_token") or "").strip()
    for secret in (code, refresh_token, params.get("code_verifier")):
        if secret:
            mask_secret(secret)
    if variable and params.get("refresh_token"):
        raise AirflowFailException("Give refresh_token or refresh_token_variable, not both.")
    if params.get("refresh_token"):
        # The run's configuration is readable by everyone who sees the run: rotate the token at once
        # (next), so the copy left there is dead; a Variable is the better way to hand one over.
        log.warning(
            "A refresh token was given in the run's configuration; it is rotated now so that copy stops "
            "working. Next time put it in a Variable and pass refresh_token_variable."
        )
    if bool(code) == bool(refresh_token):
        raise AirflowFailException(
            "Give either auth_code (with redirect_uri) or a refresh token (refresh_token or "
            "refresh_token_variable), not both or neither."
        )
    if code and not redirect_uri.startswith(("https://", "http://")):
        raise AirflowFailException(
            "redirect_uri is required with auth_code and must be the http(s) URL used to authorize."
        )

    hook = TikTokDisplayHook(tiktok_conn_id=tiktok_conn_id)
    try:
        if code:
            grant = hook.exchange_code(code, redirect_uri, params.get("code_verifier") or None)
        else:
            grant = hook.refresh_grant(refresh_token)
        hook.token_store.save_grant(grant)
        if variable:  # the token in it was just rotated: dead, and no longer needed
            _delete_variable(variable)
        fields = [f for f in PROFILE_FIELDS if f != "username" or "user.info.profile" in grant.scopes]
        user = hook.get_user_info(grant.open_id, fields) if "user.info.basic" in grant.scopes else {}
        warehouse = Warehouse(get_engine(hook.config.warehouse_conn_id))
        warehouse.upsert_account_profile(grant.open_id, user, now=datetime.now(UTC))
    except TikTokError as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(str(exc)) from None
    except TokenStoreError as exc:
        raise AirflowFailException(str(exc)) from None
    scopes = sorted(grant.scopes)
    log.info("Connected account %s (%s) with scopes %s", grant.open_id, user.get("display_name"), ", ".join(scopes))
    return {"open_id": grant.open_id, "display_name": user.get("display_name"), "scopes": scopes}


def _refresh_token_from(variable: str) -> str:
    """Read the refresh token to import from the Airflow Variable named in the run's params."""
    from airflow.sdk import Variable

    token = Variable.get(variable, default=None)
    if not token or not str(token).strip():
        raise AirflowFailException(
            f"Variable {variable!r} is missing or empty. Create it with the refresh token "
            f"(airflow variables set {variable} <token>) and trigger the run again. (A try that got as "
            "far as storing the tokens deletes the Variable: then the account is connected already.)"
        )
    return str(token).strip()


def _delete_variable(variable: str) -> None:
    from airflow.sdk import Variable

    Variable.delete(variable)
    log.info("Deleted Variable %s: the refresh token it held has been rotated", variable)
