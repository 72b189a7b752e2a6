"""The transport: one HTTP request to TikTok, THE retry policy, pacing, and the per-request counters.

:class:`TikTokClient` builds each URL (refusing bearer tokens over plain http to remote hosts),
paces requests per endpoint from the cluster's shared budget
(:func:`tiktok_provider.budget.budget_for`), reads an answer by a cutoff however slowly it arrives,
and retries what is worth retrying (:meth:`TikTokClient.retrying`).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import tenacity

from tiktok_provider import errors, metrics
from tiktok_provider.budget import budget_for
from tiktok_provider.responses import Envelope, parse_envelope

T = TypeVar("T")

if TYPE_CHECKING:
    import requests

    from tiktok_provider.connection import TikTokConnectionConfig

USER_AGENT = "airflow-tiktok-display/0.1"

#: One INFO line per HTTP request to TikTok goes to this logger: method, endpoint, account, the cursor
#: or number of ids, the HTTP status, TikTok's log_id, elapsed ms, attempt. Never a token, a header
#: (but the log_id) or a form value. On by default; the connection's ``request_log`` extra (``false``)
#: turns it off. (Airflow 3.3's ``[logging] namespace_levels`` only reaches structlog loggers, not
#: this stdlib one, so the switch is the connection's.)
REQUEST_LOG = logging.getLogger("tiktok_provider.requests")

_attempt = threading.local()


def describe_request(
    params: dict[str, Any] | None, json_body: dict[str, Any] | None, form: dict[str, str] | None
) -> str:
    """What a request asked for, for the request log: the cursor or the number of ids, never a secret.

    Only named, harmless keys are read: a form (the token endpoint's) carries an auth code or a
    refresh token, so of a form only its ``grant_type`` is shown.
    """
    parts: list[str] = []
    if form is not None:
        grant = form.get("grant_type")
        if grant in ("authorization_code", "refresh_token", "client_credentials"):
            parts.append(f"grant_type={grant}")
        return " ".join(parts)
    body = json_body or {}
    if "cursor" in body and isinstance(body["cursor"], (int, str)):
        parts.append(f"cursor={str(body['cursor'])[:32]}")
    if isinstance(body.get("max_count"), int):
        parts.append(f"max_count={body['max_count']}")
    ids = (body.get("filters") or {}).get("video_ids") if isinstance(body.get("filters"), dict) else None
    if isinstance(ids, list):
        parts.append(f"ids={len(ids)}")
    fields = (params or {}).get("fields")
    if isinstance(fields, str):
        parts.append(f"fields={fields.count(',') + 1 if fields else 0}")
    return " ".join(parts)


@dataclass
class RequestCounts:
    """What a hook's requests came to: calls and retries per endpoint, token refreshes."""

    calls: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    refreshes: int = 0


def new_session() -> requests.Session:
    """An HTTP session that ignores the environment's proxies and netrc (no network until a call)."""
    import requests  # here, not at the top: every DAG file importing the operators would pay ~30 ms

    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.trust_env = False
    return session


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


def _read_by(resp: requests.Response, cutoff: float, read_timeout: float, *, path: str, open_id: str | None) -> bytes:
    """Read a streamed answer's body, giving up at ``cutoff`` (``time.monotonic()``) however it trickles in.

    Each read waits for at most what is left until the cutoff (the socket's timeout is lowered to
    that), and returns what one packet brought, so a drip cannot carry the read past the cutoff.
    """
    import urllib3.exceptions

    if not hasattr(resp.raw, "read1"):  # a transport adapter that hands over the whole body (tests)
        return resp.content
    sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
    chunks: list[bytes] = []
    try:
        while True:
            left = cutoff - time.monotonic()
            if left <= 0:
                raise errors.TikTokNetworkError(
                    f"the answer was not complete in time ({sum(map(len, chunks))} bytes read); gave up so as to "
                    "end within the refresh lease",
                    endpoint=path,
                    open_id=open_id,
                    http_status=resp.status_code,
                )
            if sock is not None:
                sock.settimeout(min(read_timeout, left))
            chunk = resp.raw.read1(65536, decode_content=True)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except (OSError, urllib3.exceptions.HTTPError) as exc:
        late = time.monotonic() >= cutoff
        raise errors.TikTokNetworkError(
            "the answer was not complete in time; gave up so as to end within the refresh lease"
            if late
            else f"the answer broke off ({type(exc).__name__})",
            endpoint=path,
            open_id=open_id,
            http_status=resp.status_code,
        ) from None
    finally:
        resp.close()


class TikTokClient:
    """Send requests to one TikTok app's API host, paced and retried.

    :param config: the connection's settings (host, timeouts, rate limit, attempts).
    :param session: the HTTP session to send with.
    :param counts: where calls and retries are counted (shared with the hook's summary).
    :param sleep: how to wait between retries (tests pass a recorder instead of sleeping).
    :param log: the logger retries are reported to.
    """

    def __init__(
        self,
        config: TikTokConnectionConfig,
        *,
        session: requests.Session,
        counts: RequestCounts,
        sleep: Callable[[float], None] = time.sleep,
        log: logging.Logger | Any = None,
        priority: str = "normal",
    ) -> None:
        self.config = config
        #: The caller's share of the shared budget: ``interactive``, ``normal`` or ``bulk``.
        self.priority = priority
        self.session = session
        self.counts = counts
        self.sleep = sleep
        self.log = log or logging.getLogger(__name__)

    def url(self, path: str, *, bearer: bool) -> str:
        parts = urlsplit(self.config.base_url)
        trusted = _is_loopback(parts.hostname) or parts.hostname in self.config.insecure_http_hosts
        if bearer and parts.scheme != "https" and not trusted:
            raise errors.TikTokConfigError(
                f"refusing to send a bearer token over {parts.scheme}:// to {parts.hostname}; "
                "use https (plain http is only allowed for loopback hosts and the connection's insecure_http_hosts)",
                endpoint=path,
            )
        return f"{self.config.base_url}{path}"

    def send(
        self,
        method: str,
        path: str,
        *,
        open_id: str | None,
        bearer: str | None = None,
        params: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        form: dict[str, str] | None = None,
        cutoff: float | None = None,
    ) -> requests.Response:
        """Send one request; with ``cutoff`` (a ``time.monotonic()`` value) the whole answer must be in by then.

        ``read_timeout`` bounds each socket read, not the answer: a body trickled in a byte at a time
        would never time out. So a capped call streams the body and gives up at the cutoff, and its
        connect and first-byte timeouts are cut to the time left.
        """
        import requests

        url = self.url(path, bearer=bearer is not None or form is not None)
        cfg = self.config
        limiter = budget_for(cfg, path)
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        timeout = (cfg.connect_timeout, cfg.read_timeout)
        started = time.monotonic()
        asked = describe_request(params, json_body, form)
        if cutoff is not None:
            left = max(0.1, cutoff - time.monotonic())
            timeout = (min(cfg.connect_timeout, left), min(cfg.read_timeout, left))
        try:
            with limiter.slot(self.priority):
                self.counts.calls[path] += 1
                resp = self.session.request(
                    method,
                    url,
                    params=params,
                    json=json_body,
                    data=form,
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=False,
                    stream=cutoff is not None,
                )
            if cutoff is not None:
                # requests' own cache of the body (what ``resp.content`` returns once read)
                resp._content = _read_by(resp, cutoff, cfg.read_timeout, path=path, open_id=open_id)
            self._log_request(
                method, path, open_id, asked, f"HTTP {resp.status_code}", resp.headers, started, cfg, resp.status_code
            )
            return resp
        except requests.Timeout as exc:
            self._log_request(method, path, open_id, asked, f"timed out ({type(exc).__name__})", None, started, cfg)
            raise errors.TikTokNetworkError(
                f"timed out ({type(exc).__name__})", endpoint=path, open_id=open_id
            ) from None
        except requests.RequestException as exc:
            self._log_request(method, path, open_id, asked, f"failed ({type(exc).__name__})", None, started, cfg)
            raise errors.TikTokNetworkError(
                f"connection failed ({type(exc).__name__})", endpoint=path, open_id=open_id
            ) from None
        except errors.TikTokNetworkError as exc:  # the body did not arrive by the cutoff
            outcome = f"HTTP {exc.http_status}, body cut off"
            self._log_request(method, path, open_id, asked, outcome, None, started, cfg, exc.http_status)
            raise

    @staticmethod
    def _log_request(
        method: str,
        path: str,
        open_id: str | None,
        asked: str,
        outcome: str,
        headers: Any,
        started: float,
        config: Any = None,
        status: int | None = None,
    ) -> None:
        """The request log's line: what was asked, how it ended, TikTok's log_id; no token, no header but the log_id.

        Also the request's metrics (``tiktok.api_calls.<endpoint>.<status>``, its latency, 429s).
        """
        metrics.api_call(path, status, seconds=time.monotonic() - started)
        if not getattr(config, "request_log", True) or not REQUEST_LOG.isEnabledFor(logging.INFO):
            return
        log_id = headers.get("x-tt-logid") if headers is not None else None
        REQUEST_LOG.info(
            "TikTok request %s %s account=%s %s-> %s log_id=%s %d ms attempt=%s",
            method,
            path,
            open_id or "(app)",
            f"{asked} " if asked else "",
            outcome,
            str(log_id)[:64] if log_id else "none",
            round((time.monotonic() - started) * 1000),
            getattr(_attempt, "number", None) or 1,
        )
        _attempt.number = None  # a request outside the retry policy is attempt 1

    def retrying(self, what: str, *, deadline: float | None = None) -> Callable[..., Any]:
        """The one retry policy: 429, 5xx, timeouts and connection errors, exponential backoff, full jitter.

        Whether an error is retried is its own :attr:`~tiktok_provider.errors.TikTokError.retryable`.

        :param deadline: a ``time.monotonic()`` value no attempt may run past (a refresh lease):
            no attempt starts that could not finish before it.
        """
        cap = self.config.max_backoff_seconds
        per_attempt = self.config.connect_timeout + self.config.read_timeout
        jitter = tenacity.wait_random_exponential(multiplier=0.5, max=cap)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = getattr(exc, "retry_after", None)
            delay = min(float(retry_after), cap) if retry_after is not None else jitter(state)
            if isinstance(exc, errors.TikTokRateLimited):
                budget_for(self.config, what).pause(delay)  # the whole app backs off, not this process
            return delay

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.counts.retries[what] += 1
            metrics.retry(what)
            self.log.warning(
                "Retrying %s in %.1fs (attempt %d): %s",
                what,
                state.next_action.sleep if state.next_action else 0.0,
                state.attempt_number,
                exc,
            )

        def before(state: tenacity.RetryCallState) -> None:
            _attempt.number = state.attempt_number

        def out_of_time(state: tenacity.RetryCallState) -> bool:
            return deadline is not None and time.monotonic() + state.upcoming_sleep + per_attempt > deadline

        policy = tenacity.Retrying(
            retry=tenacity.retry_if_exception(errors.is_retryable),
            wait=wait,
            stop=tenacity.stop_after_attempt(max(1, self.config.max_attempts)) | out_of_time,
            sleep=self.sleep,
            before=before,
            before_sleep=before_sleep,
            reraise=True,
        )

        def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
            try:
                return policy(fn, *args, **kwargs)
            except errors.TikTokError as exc:  # its advice names the connection the call went through
                if exc.conn_id is None:
                    exc.conn_id = self.config.conn_id
                raise

        return run

    def call_once(
        self, method: str, path: str, open_id: str, token: str, params: dict[str, str], body: dict | None
    ) -> Envelope:
        """One call of a data endpoint with a bearer token, its answer checked (no retry)."""
        resp = self.send(method, path, open_id=open_id, bearer=token, params=params, json_body=body)
        return parse_envelope(
            resp.status_code,
            resp.content,
            endpoint=path,
            open_id=open_id,
            header_log_id=resp.headers.get("x-tt-logid"),
            retry_after=_retry_after(resp.headers),
        )

    def call(
        self, method: str, path: str, open_id: str, token: str, params: dict[str, str], body: dict | None
    ) -> Envelope:
        """A data endpoint's call under the retry policy."""
        return self.retrying(path)(self.call_once, method, path, open_id, token, params, body)
