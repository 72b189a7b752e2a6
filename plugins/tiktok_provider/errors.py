"""One exception hierarchy for everything the TikTok Display API can answer, and what a task does with it.

Every error carries the endpoint, the account's open_id, the HTTP status, TikTok's error code,
its message and the ``log_id`` (what TikTok support asks for), and says what to do next. Whether
an error is worth retrying is decided here, once, by :attr:`TikTokError.retryable` (the retry
policy and :func:`failing_fast` both read it). The token store's error bases live here too: a
caller's store raises subclasses of them, and the provider catches only these.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: The connection named in advice when an error does not know its own (the hook's default).
DEFAULT_CONN_ID = "tiktok_default"


class TikTokError(Exception):
    """Base class: a failed call to the TikTok API."""

    retryable: bool = False
    advice: str = (
        "The request's line in the task log (logger tiktok_provider.requests) shows its status and log_id; "
        "if the error persists, send TikTok support the log_id."
    )
    #: Set on errors after which the account must be reconnected (read by the token store).
    reauth_required: bool = False
    #: The Airflow connection the call went through, named in the advice (set by the client).
    conn_id: str | None = None

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        open_id: str | None = None,
        http_status: int | None = None,
        code: str | None = None,
        log_id: str | None = None,
        retry_after: float | None = None,
        conn_id: str | None = None,
    ) -> None:
        self.message = message
        if conn_id is not None:
            self.conn_id = conn_id
        self.endpoint = endpoint
        self.open_id = open_id
        self.http_status = http_status
        self.code = code
        self.log_id = log_id
        self.retry_after = retry_after
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"TikTok {self.endpoint or 'API'} call for account {self.open_id or '(app)'}"
        status = f"HTTP {self.http_status}" if self.http_status is not None else "no HTTP status"
        return (
            f"{where} failed: {self.code or type(self).__name__} ({status}): {self.message} "
            f"[log_id={self.log_id or 'none'}]. {self.next_step()}"
        )

    def next_step(self) -> str:
        """What to do next: :attr:`advice`, naming the connection the call went through."""
        return self.advice.replace("{conn_id}", self.conn_id or DEFAULT_CONN_ID)

    def __reduce__(self):  # keep keyword attributes when pickled (Celery, multiprocessing)
        return (
            _rebuild,
            (
                type(self),
                self.message,
                {
                    "endpoint": self.endpoint,
                    "open_id": self.open_id,
                    "http_status": self.http_status,
                    "code": self.code,
                    "log_id": self.log_id,
                    "retry_after": self.retry_after,
                    "conn_id": self.conn_id,
                },
            ),
        )


def _rebuild(cls: type[TikTokError], message: str, kwargs: dict) -> TikTokError:
    return cls(message, **kwargs)


class TikTokReauthRequired(TikTokError):
    """The account's refresh token was rejected or revoked: a person must reconnect it."""

    reauth_required = True
    advice = (
        "The account is now marked reauth_required. Ask its owner to authorize the app again and "
        "trigger the tiktok_connect_account DAG with the new auth_code and redirect_uri."
    )


class TikTokAccountNotActive(TikTokReauthRequired):
    """The account's stored status is not ``active``: nothing was sent to TikTok.

    It was marked ``reauth_required`` earlier (on-call was told then, by the task that marked it),
    or disabled or disconnected on purpose: no reconnect alert goes out for this one.
    """

    advice = (
        "Nothing was sent to TikTok. reauth_required: ask its owner to authorize the app again and trigger "
        "the tiktok_connect_account DAG with the new auth_code and redirect_uri; disabled: set its status "
        "back to active if it should sync again; disconnected: connect it again."
    )


class TikTokAccessTokenInvalid(TikTokError):
    """TikTok rejected the access token (expired or revoked); the hook refreshes once and retries."""

    advice = "The hook refreshes the token once on this error; if it persists, reconnect the account."


class TikTokScopeError(TikTokError):
    """A requested field needs a scope the account did not grant."""

    advice = (
        "Request only fields the account's scopes allow, or reconnect the account with the missing "
        "scope through the tiktok_connect_account DAG."
    )


class TikTokInvalidParams(TikTokError):
    """TikTok (or our own check before sending) rejected the request's parameters."""

    advice = "This is a bug in the request, not a transient fault: fix the parameters; retrying will not help."


class TikTokRateLimited(TikTokError):
    """HTTP 429 ``rate_limit_exceeded``; retried with backoff."""

    retryable = True
    advice = (
        "Retried with backoff. If it persists, lower rate_limit_per_minute in the {conn_id} "
        "connection's extra or the tiktok_api pool's slots."
    )


class TikTokServerError(TikTokError):
    """HTTP 5xx from TikTok; retried with backoff."""

    retryable = True
    advice = "Transient on TikTok's side; retried with backoff. Retry the task later if it persists."


class TikTokNetworkError(TikTokError):
    """Timeout, connection error, or a body cut off in transit (unparseable); retried with backoff."""

    retryable = True
    advice = "Network or transport fault; retried with backoff. Check connectivity to the API host."


class TikTokMalformedResponse(TikTokError):
    """A well-formed HTTP answer that breaks the API contract (missing data, wrong types, a stuck cursor)."""

    advice = (
        "The answer broke the API contract; retrying the same call will not fix it. Nothing was written "
        "for this page. Report it to TikTok support with the log_id."
    )


class TikTokOAuthError(TikTokError):
    """The OAuth token endpoint answered with an error (``invalid_client``, ``invalid_request``...)."""

    advice = "Check the client key and secret in the {conn_id} connection, and the redirect_uri."


class TikTokAPIError(TikTokError):
    """Any other error code TikTok returned."""


class TikTokConfigError(TikTokError):
    """The connection or arguments are unusable (e.g. a bearer token over plain http to a remote host)."""

    advice = "Fix the {conn_id} connection (host, login, password, extra) and retry."


class TokenStoreError(Exception):
    """Base class of a token store's own errors (a missing key, an account not active, a lost grant)."""

    #: Whether trying again later can help (the same protocol as :class:`TikTokError`).
    retryable: bool = False


class AccountNotFound(LookupError):
    """No account with this open_id is in the token store."""

    def __init__(self, open_id: str) -> None:
        super().__init__(f"TikTok account {open_id!r} is not connected (no row in tiktok.accounts).")
        self.open_id = open_id


def is_retryable(exc: BaseException) -> bool:
    """Whether trying again can help: the one rule, read by the retry policy and by :func:`failing_fast`."""
    return bool(getattr(exc, "retryable", False))


def printable(text: str | None, limit: int = 100) -> str:
    """Creator text (a display name) fit for a log line: one line, printable characters only, cut to ``limit``.

    Line breaks would forge log lines, terminal escapes act on the reader's terminal, and format
    characters such as U+202E (right-to-left override) turn the rest of the line around: each becomes
    a space, and runs of spaces one.
    """
    return " ".join("".join(c if c.isprintable() else " " for c in (text or "")).split())[:limit]


def escaped(text: Any, limit: int | None = 100) -> str:
    """Text a server or a peer sent, fit for a log line or a recorded reason: every unprintable
    character escaped (``\\n``, ``\\x1b``, ``\\u202e``), so it shows as what it is and rewrites
    nothing around it; longer than ``limit`` (None: no cut), it is cut, saying how long it was.

    :func:`printable` is for a name a reader should read as a name: there they become spaces.
    """
    text = str(text)
    clean = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return clean if limit is None or len(clean) <= limit else f"{clean[:limit]}... ({len(text)} characters)"


def account_label(open_id: str | None, name: str | None = None) -> str:
    """How a message names an account: its display name (as text, on one line) and its open_id."""
    if not open_id:
        return "(app)"
    clean = printable(name)
    return f"{clean!r} (open_id {open_id})" if clean and clean != open_id else f"open_id {open_id}"


@contextmanager
def failing_fast(*, not_found: str | None = None, account: str | None = None, log: Any = None) -> Iterator[None]:
    """In a task: let errors a retry can fix through; turn the others into ``AirflowFailException``.

    Airflow then spends no retries on a scope error, invalid parameters, a contract break or an
    account that must be reconnected. The exception is raised ``from None``: the provider's own
    frames (client, retry policy) are not chained under it; ``log`` gets the message, with the next
    step, as one ERROR line first.

    :param not_found: the message for an account the token store does not know.
    :param account: how to name the account (:func:`account_label`), put before the message.
    :param log: where to write the clean ERROR line (the task's logger).
    """
    from airflow.sdk.exceptions import AirflowFailException

    def fail(text: str) -> AirflowFailException:
        message = f"Account {account}: {text}" if account else text
        if log is not None:
            log.error("%s", message)
        return AirflowFailException(message)

    try:
        yield
    except AccountNotFound as exc:
        raise fail(not_found or str(exc)) from None
    except (TikTokError, TokenStoreError) as exc:
        if is_retryable(exc):
            raise
        raise fail(str(exc)) from None
