"""Connect or reconnect an account: exchange or refresh, store encrypted tokens, fetch the profile.

An authorization code is single-use and lives minutes; a refresh token stops working once it is
rotated. So the flow is ordered to never spend one on tokens it cannot keep:

1. check the params (nothing secret is used yet);
2. check that the token store can store tokens (key, warehouse reachable, migrated, writable):
   a failure here leaves the credential unspent, and a warehouse that is merely down is retried;
3. exchange the code (or rotate the refresh token) -- the one step that spends it;
4. store the grant, retrying transient database errors while holding it in memory only;
5. delete the Variable the refresh token came from (that token is dead now);
6. fetch the profile: best effort, the account is connected whatever happens here; but a refusal
   is said in the log and in the result (``profile``, ``usable``, ``problem``), with TikTok's
   log_id and what to do next (:func:`profile_refusal`).

Nothing after step 3 makes Airflow retry the task: a retry would spend the credential again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from tiktok_pipeline.names import REFRESH_TOKEN_VARIABLE_PREFIX

log = logging.getLogger(__name__)

PROFILE_FIELDS = ("open_id", "display_name", "avatar_url", "username")
#: The only Variables the connect DAG reads a refresh token from. A prefix, so that whoever may
#: trigger the DAG cannot have any other Variable's value sent to TikTok's host; and no dots, so a
#: token pasted into the box by mistake (``rft.…``) never matches.
VARIABLE_PREFIX = REFRESH_TOKEN_VARIABLE_PREFIX
VARIABLE_PATTERN = rf"^{VARIABLE_PREFIX}[A-Za-z0-9_-]{{1,64}}$"
#: For the form's free-text params: refuse anything that starts like a TikTok token.
NOT_A_TOKEN_PATTERN = r"^(?![ \t]*(?:act|rft|clt)\.)"
ROTATE_ADVICE = (
    "A run's configuration is stored in plain text and shown to everyone who can see the run, so treat that "
    "token as leaked: revoke it (disconnect and reconnect the account, which rotates its tokens), and delete "
    "this run so its configuration goes too. To connect with a refresh token, put it in a Variable "
    f"(airflow variables set {VARIABLE_PREFIX}<name> <token>) and give that Variable's name."
)


def connect_account(
    params: dict[str, Any], *, tiktok_conn_id: str, conf: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run the connect flow for one set of DAG params; return open_id, scopes and the display name.

    :param conf: the run's whole configuration (it may hold keys that are not params), searched for
        anything shaped like a token: such a run is refused, nothing is spent.
    """
    from airflow.sdk.log import mask_secret

    from tiktok_pipeline.hooks import display_hook
    from tiktok_provider.errors import TikTokError, TokenStoreError, failing_fast

    code = (params.get("auth_code") or "").strip()
    redirect_uri = (params.get("redirect_uri") or "").strip()
    variable = (params.get("refresh_token_variable") or "").strip()
    for secret in (code, params.get("refresh_token"), params.get("code_verifier")):
        if secret:
            mask_secret(str(secret))
    pasted = [value for value in _strings(conf if conf is not None else params) if _looks_like_token(value)]
    for value in pasted:
        mask_secret(value)
    if pasted:
        # Found anywhere in the conf (keys that are not params are accepted at trigger time): not used.
        raise AirflowFailException(
            f"This run's configuration holds {len(pasted)} value(s) shaped like a TikTok token; nothing was sent to "
            f"TikTok and the value is not shown here. {ROTATE_ADVICE}"
        )
    if variable and not re.fullmatch(VARIABLE_PATTERN, variable):
        # Never echoed: whatever it is, it is not a name we read (it may be a token pasted by mistake).
        raise AirflowFailException(
            f"refresh_token_variable must be the name of a Variable of the form {VARIABLE_PREFIX}<name> (letters, "
            "digits, _ and -); the value given is not, and is not shown here in case it is a token. If you pasted "
            f"a refresh token there: {ROTATE_ADVICE}"
        )
    if params.get("refresh_token"):
        # The DAG's params refuse it at trigger time; this is for a run that got past them anyway.
        raise AirflowFailException(
            "A refresh token in the run's configuration is refused, and was not used: the configuration is "
            "stored in plain text and shown to everyone who can see the run, and a token left there stays live "
            "whenever a run fails before rotating it. Put it in a Variable (airflow variables set "
            f"{VARIABLE_PREFIX}<name> <token>) and trigger the DAG with refresh_token_variable."
        )
    if bool(code) == bool(variable):
        raise AirflowFailException(
            "Give either auth_code (with redirect_uri) or refresh_token_variable (the name of a Variable holding "
            "a refresh token), not both or neither."
        )
    if code and not redirect_uri.startswith(("https://", "http://")):
        raise AirflowFailException(
            "redirect_uri is required with auth_code and must be the http(s) URL used to authorize."
        )
    refresh_token = _refresh_token_from(variable) if variable else ""
    what = "authorization code" if code else f"refresh token in Variable {variable!r}"

    hook = display_hook(tiktok_conn_id, priority="interactive")  # a code expires in minutes
    try:
        hook.token_store.check_ready()
    except TokenStoreError as exc:
        if exc.retryable:  # the warehouse is down: the credential is unspent, so trying again is safe
            raise
        again = "(codes live minutes: ask for a new one if this one has expired)" if code else "(the Variable is kept)"
        raise AirflowFailException(
            f"{exc} The {what} was not used: fix this and trigger the DAG again {again}."
        ) from None

    with failing_fast():  # a retryable error brought no tokens back, so nothing is lost by trying again
        try:
            if code:
                grant = hook.exchange_code(code, redirect_uri, params.get("code_verifier") or None)
            else:
                grant = hook.refresh_grant(refresh_token)
        except TikTokError as exc:
            if not exc.reauth_required:
                raise
            # Its own advice is for a stored account's refresh ("now marked reauth_required"): here
            # nothing is stored yet, so nothing was marked.
            raise AirflowFailException(_refused(exc, redirect_uri=redirect_uri, variable=variable)) from None

    # From here on TikTok has spent the credential: no Airflow retry (it would spend it again).
    try:
        hook.token_store.save_grant(grant)
    except TokenStoreError as exc:  # TokenGrantLost: says what was lost and what to do
        raise AirflowFailException(str(exc)) from None
    except Exception as exc:
        raise AirflowFailException(
            f"TikTok issued tokens for account {grant.open_id} [log_id={grant.log_id or 'none'}], but storing them "
            f"failed ({type(exc).__name__}). The {what} is spent: have the account's owner authorize the app again "
            "and trigger this DAG with the new auth_code."
        ) from None
    if variable:  # the token in it was just rotated: dead, and no longer needed
        _delete_variable(variable)

    user, scopes, fetch = _profile(hook, grant)
    result = {
        "open_id": grant.open_id,
        "display_name": user.get("display_name"),
        "scopes": scopes,
        "profile": fetch.status,
        "usable": fetch.usable,
    }
    if fetch.problem is None:
        from tiktok_provider.errors import account_label

        who = account_label(grant.open_id, user.get("display_name"))  # one printable line: no forged log line
        log.info("Connected account %s with scopes %s", who, ", ".join(scopes))
        return result
    log.warning(
        "Connected account %s with scopes %s, but its profile was %s%s (see the message above)",
        grant.open_id,
        ", ".join(scopes),
        {PROFILE_NOT_FETCHED: "not fetched", PROFILE_NOT_ALLOWED: "not asked for (no user.info.basic)"}.get(
            fetch.status, "refused"
        ),
        "; the account cannot work until it is reconnected" if not fetch.usable else "",
    )
    return {**result, "problem": fetch.problem}


def _refused(exc: Any, *, redirect_uri: str, variable: str) -> str:
    """What to say when TikTok refuses the credential a connect run presented (invalid_grant and the like)."""
    said = f"{exc.code or type(exc).__name__}: {exc.message} [log_id={exc.log_id or 'none'}]"
    if variable:
        return (
            f"TikTok refused the refresh token in Variable {variable!r} ({said}): it was revoked, has expired or "
            "was rotated already. Nothing was stored and no account was changed; the Variable is kept. Connect the "
            "account with a new authorization code instead."
        )
    return (
        f"TikTok refused the authorization code ({said}): it has expired (codes live minutes), was used already, "
        f"or was issued for another redirect_uri than {redirect_uri!r} or another app. Nothing was stored and no "
        "account was changed. Have the account's owner authorize the app again, and trigger this DAG with the new "
        "auth_code straight away."
    )


def _strings(value: Any) -> Iterator[str]:
    """Every string in a run's configuration, keys included, however deeply nested."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _looks_like_token(value: str) -> bool:
    from tiktok_warehouse.tokens import looks_like_token

    return looks_like_token(value)


#: What the connect result's ``profile`` says about the first profile fetch.
PROFILE_FETCHED = "fetched"
PROFILE_NOT_ALLOWED = "not_allowed"  # no user.info.basic: nothing was asked
PROFILE_REFUSED = "refused"  # TikTok answered with an error a retry cannot fix
PROFILE_NOT_FETCHED = "not_fetched"  # a transient fault outlasted the retries, or the profile was not stored
#: Where a profile that was not fetched is filled in, and where the account's owner reconnects.
SNAPSHOT_DAG = "tiktok_profile_snapshot"
RECONNECT = (
    "ask its owner to connect it again (TikTok accounts page: Reconnect, or this DAG with a new auth_code) and to "
    "grant user.info.basic"
)


#: The most of one piece of outside text (TikTok's message, an exception's) a ``problem`` quotes.
QUOTED = 300


def _quoted(text: Any, limit: int = QUOTED) -> str:
    """Outside text for a ``problem``: one printable line, cut to ``limit``, anything shaped like a token removed.

    TikTok's answer (or a proxy's) and an exception's text are whatever they are: the ``problem`` is
    logged as one line and kept in the run's XCom, which the secrets masker does not touch.
    """
    from tiktok_provider.errors import printable
    from tiktok_warehouse.tokens import redact

    return printable(redact(str(text)), limit)


@dataclass(frozen=True)
class ProfileFetch:
    """How the first profile fetch of a newly connected account went, in words for the person connecting it.

    :param usable: False when the answer means the account cannot work as connected (its token is
        refused by the API, or it may not be read at all): nothing will sync until it is reconnected.
    """

    status: str
    problem: str | None = None
    usable: bool = True


def profile_refusal(exc: BaseException, *, account: str, scopes: frozenset[str]) -> ProfileFetch:
    """What the person connecting ``account`` must hear when its first profile fetch raised ``exc``.

    The tokens are stored either way; this says what TikTok answered (its ``log_id`` included), what
    that means for the account, and what to do next.
    """
    from tiktok_provider.errors import (
        TikTokAccessTokenInvalid,
        TikTokError,
        TikTokScopeError,
        is_retryable,
    )

    stored = f"Account {account} is connected (its tokens are stored), but"
    if not isinstance(exc, TikTokError):
        return ProfileFetch(
            PROFILE_NOT_FETCHED,
            f"{stored} its profile could not be fetched or stored ({type(exc).__name__}: {_quoted(exc)}). The next "
            f"{SNAPSHOT_DAG} run fills it in; if that fails too, its log says why.",
        )
    said = (
        f"{_quoted(exc.code or type(exc).__name__, 80)} "
        f"(HTTP {exc.http_status if exc.http_status is not None else 'none'}): "
        f"{_quoted(exc.message)} [log_id={_quoted(exc.log_id or 'none', 80)}]"
    )
    if is_retryable(exc):
        return ProfileFetch(
            PROFILE_NOT_FETCHED,
            f"{stored} its profile could not be fetched: TikTok kept failing ({said}), retried. The next "
            f"{SNAPSHOT_DAG} run fills it in.",
        )
    if exc.reauth_required:
        return ProfileFetch(
            PROFILE_REFUSED,
            f"{stored} TikTok refused its first profile fetch and then its refresh token ({said}): the account "
            f"is now marked reauth_required and cannot sync. The owner may have revoked the app's access just "
            f"now: {RECONNECT}.",
            usable=False,
        )
    if isinstance(exc, TikTokAccessTokenInvalid):
        return ProfileFetch(
            PROFILE_REFUSED,
            f"{stored} TikTok refused the access token it had just issued, also after one refresh ({said}): "
            "the account cannot work as connected, and none of its tasks will sync. Check that the client key "
            "of the TikTok connection is the app the owner authorized; then "
            f"{RECONNECT}. Send TikTok support the log_id if it persists.",
            usable=False,
        )
    if isinstance(exc, TikTokScopeError):
        granted = _quoted(", ".join(sorted(scopes))) or "none"
        return ProfileFetch(
            PROFILE_REFUSED,
            f"{stored} TikTok refused its profile for lack of a scope ({said}), although the grant lists "
            f"{granted}: the account cannot work for profile snapshots (every {SNAPSHOT_DAG} run would fail "
            f"for it). {RECONNECT[0].upper()}{RECONNECT[1:]} (and user.info.profile, user.info.stats for those "
            "fields).",
            usable=False,
        )
    if exc.http_status in (401, 403):
        return ProfileFetch(
            PROFILE_REFUSED,
            f"{stored} TikTok refused to give its profile ({said}): the account may be suspended, restricted or "
            "private at TikTok, or the app may not be allowed to read it, and its tasks will likely fail the same "
            "way. Check the account on TikTok and send TikTok support the log_id; once it is resolved, the next "
            f"{SNAPSHOT_DAG} run fills the profile in.",
            usable=False,
        )
    return ProfileFetch(
        PROFILE_REFUSED,
        f"{stored} TikTok refused its first profile fetch ({said}). {exc.next_step()} The next {SNAPSHOT_DAG} "
        "run tries again.",
    )


def _profile(hook: Any, grant: Any) -> tuple[dict[str, Any], list[str], ProfileFetch]:
    """Fetch and store the newly connected account's profile; never fail the connect over it.

    What went wrong, if anything, is logged (WARNING, or ERROR when the account cannot work) and
    returned, so that the connect's result says it too.
    """
    from tiktok_pipeline.hooks import warehouse_of
    from tiktok_provider.errors import account_label

    scopes: frozenset[str] = grant.scopes or frozenset()
    user: dict[str, Any] = {}
    try:
        scopes = grant.scopes if grant.scopes is not None else hook.scopes(grant.open_id)
        if "user.info.basic" not in scopes:
            granted = _quoted(", ".join(sorted(scopes))) or "nothing"
            fetch = ProfileFetch(
                PROFILE_NOT_ALLOWED,
                f"Account {account_label(grant.open_id)} is connected (its tokens are stored), but it did not grant "
                f"user.info.basic (it granted {granted}), so TikTok gives no profile "
                f"for it: nothing was asked, no profile is stored, and every {SNAPSHOT_DAG} run will fail for it. "
                f"To have profiles, {RECONNECT}.",
                usable=False,
            )
        else:
            fields = [f for f in PROFILE_FIELDS if f != "username" or "user.info.profile" in scopes]
            user = hook.get_user_info(grant.open_id, fields)
            warehouse_of(hook).upsert_account_profile(grant.open_id, user, now=datetime.now(UTC))
            fetch = ProfileFetch(PROFILE_FETCHED)
    except Exception as exc:  # the tokens are stored: the account is connected all the same
        fetch = profile_refusal(exc, account=account_label(grant.open_id, user.get("display_name")), scopes=scopes)
        user = {}
    if fetch.problem:
        (log.warning if fetch.usable else log.error)("%s", fetch.problem)
    return user, sorted(scopes), fetch


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
    from airflow.sdk.log import mask_secret

    mask_secret(str(token).strip())
    return str(token).strip()


def _delete_variable(variable: str) -> None:
    from airflow.sdk import Variable

    try:
        Variable.delete(variable)
    except Exception as exc:  # the token in it is dead already: a leftover is untidy, not unsafe
        log.warning("Could not delete Variable %s (%s); its token no longer works, delete it by hand", variable, exc)
        return
    log.info("Deleted Variable %s: the refresh token it held has been rotated", variable)
