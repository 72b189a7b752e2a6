"""The error half of every per-account task's runbook: one entry per error class a task can raise.

A failed task's message starts with the account and ends with its next step; the task's doc_md
(*Task Docs*, and the task's *Runbook* link) repeats it per error class, by the class name the
message and the log show (``AirflowFailException: Account ...: TikTok ... failed: <code> ...``
names TikTok's error code; the class is in the log's traceback and here).
``tests/dags/test_runbooks.py`` checks every error class has an entry in every task that
can raise it.
"""

from __future__ import annotations

RECONNECT = (
    "ask the creator to connect the account again (the **Account** link, then *Reconnect* on the "
    "TikTok accounts page, or the `tiktok_connect_account` DAG); later runs skip it until then, and "
    "nothing needs clearing"
)

#: Error class name -> (what it means, what to do). Retried = Airflow's task retries are spent on it;
#: not retried = the task fails at once (AirflowFailException), and clearing it only helps after the fix.
ERRORS: dict[str, tuple[str, str]] = {
    "TikTokReauthRequired": (
        "TikTok rejected or revoked the account's refresh token (`invalid_grant`); the account is now "
        "`reauth_required`. Not retried.",
        RECONNECT + ".",
    ),
    "TikTokAccountNotActive": (
        "The account's status is not `active` (`reauth_required`: marked earlier, and on-call was told "
        "then; `disabled`; `disconnected`), so nothing was sent to TikTok. Not retried.",
        "`reauth_required`: " + RECONNECT + ". `disabled`: if it should sync again, "
        "`UPDATE tiktok.accounts SET status = 'active' WHERE open_id = '<open_id>';`",
    ),
    "TikTokAccessTokenInvalid": (
        "TikTok rejected the access token (`access_token_invalid`). The hook refreshed it once and tried again.",
        "If it keeps failing: " + RECONNECT + ".",
    ),
    "TikTokScopeError": (
        "The account did not grant a scope the request needs (`scope_not_authorized`). Not retried.",
        "Reconnect the account with the missing scope (the message names it).",
    ),
    "TikTokInvalidParams": (
        "TikTok refused the request's parameters (`invalid_params`), or our own check did before sending. "
        "Not retried: it is a bug in the request.",
        "Keep the request line (logger `tiktok_provider.requests`) and the `log_id`, and report it.",
    ),
    "TikTokRateLimited": (
        "HTTP 429 `rate_limit_exceeded`. Retried with backoff (TikTok's `Retry-After` is honoured).",
        "If the retries run out, clear the task later. If it recurs, lower `rate_limit_per_minute` in the "
        "TikTok connection's extra or the slots of the `tiktok_api` pool.",
    ),
    "TikTokServerError": (
        "HTTP 5xx from TikTok. Retried with backoff.",
        "If the retries run out, clear the task later (safe: a rerun writes what one clean run would).",
    ),
    "TikTokNetworkError": (
        "Timeout, refused connection or an answer cut off in transit. Retried with backoff.",
        "Check the worker can reach the API host (the connection's host); clear the task when it can.",
    ),
    "TikTokMalformedResponse": (
        "A malformed answer: HTTP 200 that breaks the API contract (missing `data`, wrong types, a cursor "
        "that did not advance). Not retried; nothing of that page was written.",
        "Send TikTok support the `log_id` from the message. Clearing the task resumes from the last stored "
        "page once TikTok answers properly.",
    ),
    "TikTokAPIError": (
        "An error code we do not know (the message shows TikTok's `code` and message). Not retried.",
        "Look the code up in TikTok's Display API error list, and send TikTok support the `log_id`; "
        "clear the task when the cause is fixed.",
    ),
    "TikTokOAuthError": (
        "TikTok's token endpoint refused the app (`invalid_client`, `invalid_request`...). Not retried.",
        "Check the client key and secret (login and password) of the TikTok connection, and the redirect_uri.",
    ),
    "TikTokConfigError": (
        "The TikTok connection is unusable (e.g. a bearer token over plain http to a remote host). Not retried.",
        "Fix the connection's host or extra, then clear the task.",
    ),
    "TikTokError": (
        "Any other failed call to TikTok (the base class).",
        "Read the message and the request line above it; send TikTok support the `log_id`.",
    ),
    "AccountNotFound": (
        "The account is not in the warehouse (`tiktok.accounts`). Not retried.",
        "Connect it with the `tiktok_connect_account` DAG or the TikTok accounts page.",
    ),
    "AccountNotActive": (
        "The account's token needed refreshing but its status is not `active` (`reauth_required`, "
        "`disabled`, `disconnected`). Not retried.",
        "`reauth_required`: " + RECONNECT + ". `disabled`: if it should sync again, "
        "`UPDATE tiktok.accounts SET status = 'active' WHERE open_id = '<open_id>';`",
    ),
    "TokenStoreError": (
        "The token store failed (the base class of the errors below). Not retried unless it says so.",
        "Read the message; it names the connection and the fix.",
    ),
    "TokenEncryptionKeyMissing": (
        "The TikTok connection's extra has no `token_encryption_key`. Not retried.",
        "Put back the key the tokens were stored with, then clear the task.",
    ),
    "TokenEncryptionKeyInvalid": (
        "The `token_encryption_key` is not a Fernet key. Not retried.",
        "Put back the key the tokens were stored with, then clear the task.",
    ),
    "TokenDecryptionError": (
        "The account's stored tokens cannot be decrypted with the configured key (the key was changed). Not retried.",
        "Put the old key back (several keys may be given, comma-separated, newest first); if it is lost, "
        + RECONNECT
        + ".",
    ),
    "TokenStoreUnavailable": (
        "The warehouse could not be reached. Retried.",
        "Check Postgres and the warehouse connection (the TikTok connection's `warehouse_conn_id`).",
    ),
    "TokenStoreNotReady": (
        "The warehouse answers but cannot store tokens (not migrated, read-only, no permission). Not retried.",
        "Migrate the warehouse (`make migrate`) or fix the DAG role's grants, then clear the task.",
    ),
    "TokenGrantLost": (
        "TikTok issued new tokens but the warehouse could not store them; the old refresh token is spent. Not retried.",
        RECONNECT + ".",
    ),
    "TokenRefreshTimeout": (
        "Waited too long for another worker's refresh of the same account's token. Retried.",
        "Nothing, unless it recurs: then look for a worker stuck refreshing (its log) and the "
        "`refresh_lease_seconds` extra.",
    ),
}

#: Not errors, but what on-call is asked about: a warning in the log of the video tasks.
REMOVALS_HELD = (
    "- WARNING *removals held* (`removals_held=N` in the summary): more than 20% (and more than 5) of "
    "the account's live videos were missing twice, usually an outage or an account made private. "
    "Nothing is marked removed; they stay pending and are judged again next run. Nothing to do; if "
    "the creator really deleted them, see the `tiktok_video_backfill` DAG docs."
)


def error_runbook(*, removals: bool = False) -> str:
    """The markdown section listing every error class, what it means and the next step."""
    lines = [
        "",
        "#### Errors, by class",
        "A failed task's log shows one ERROR line naming the account (display name and open_id), "
        "TikTok's error code, the `log_id` and the next step; the *Account* link opens its page. One "
        "line per request to TikTok is logged just above it (logger `tiktok_provider.requests`).",
        "",
    ]
    for name, (meaning, todo) in ERRORS.items():
        lines.append(f"- `{name}`: {meaning} **Next:** {todo}")
    if removals:
        lines.append(REMOVALS_HELD)
    return "\n".join(lines) + "\n"
