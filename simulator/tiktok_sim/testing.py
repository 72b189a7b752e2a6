"""Start a simulator in a subprocess and drive it from tests, the demo or a shell.

Example::

    import requests
    from tiktok_sim.testing import running_simulator

    with running_simulator(seed=7, accounts=2, rate_limit=5, rate_window=2) as sim:
        open_id = sim.admin.accounts()[0]["open_id"]
        tokens = sim.get_tokens(open_id)  # mint a code + exchange it at /v2/oauth/token/
        answer = requests.get(
            f"{sim.base_url}/v2/user/info/", params={"fields": "open_id"}, headers=tokens.headers
        )
        assert answer.json()["error"]["code"] == "ok"
        sim.admin.fail_next("video_list", "internal_error", count=2)
        sim.admin.advance_clock(6 * 3600)
        assert sim.admin.stats()["endpoints"]["user_info"]["requests"] == 1

:func:`running_simulator` (a context manager) and :func:`start_simulator` run
``python -m tiktok_sim`` with ``sys.executable`` on a free loopback port, wait until it answers
and stop it afterwards.  The client secret is random per run and passed through the environment,
never on the command line.  :func:`connect` wraps a simulator that is already running (e.g. the
one ``make demo`` started).  :class:`SimulatorAdmin` has one typed method per ``/_sim/`` endpoint.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

import tiktok_sim
from tiktok_sim.config import DEFAULT_CLIENT_KEY, ENV_PREFIX, OPTIONS_BY_NAME

DEFAULT_SCOPES: tuple[str, ...] = ("user.info.basic", "user.info.profile", "user.info.stats", "video.list")
DEFAULT_REDIRECT_URI = "https://example.com/tiktok/callback"
_READY = re.compile(r"tiktok-sim listening on (http://\S+)")
LOG_ID_PATTERN = re.compile(r"^\d{14}[0-9A-F]{20}$")
"""What a TikTok ``log_id`` looks like: ``YYYYMMDDhhmmss`` + 20 upper-case hex chars."""


class SimulatorError(RuntimeError):
    """The simulator could not be started, or a call to it failed."""


class AdminError(SimulatorError):
    """An admin API call answered with an HTTP error."""

    def __init__(self, method: str, path: str, status: int, detail: Any) -> None:
        super().__init__(f"{method} {path} failed with HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class TokenSet:
    """A successful token answer; ``repr`` never shows the token values."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    open_id: str
    scopes: tuple[str, ...]
    expires_in: int
    refresh_expires_in: int
    log_id: str
    raw: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> TokenSet:
        return cls(
            access_token=answer["access_token"],
            refresh_token=answer["refresh_token"],
            open_id=answer["open_id"],
            scopes=tuple(answer["scope"].split(",")),
            expires_in=answer["expires_in"],
            refresh_expires_in=answer["refresh_expires_in"],
            log_id=answer.get("log_id", ""),
            raw=dict(answer),
        )

    @property
    def headers(self) -> dict[str, str]:
        """Return the ``Authorization`` header for the Display API."""
        return {"Authorization": f"Bearer {self.access_token}"}


def pkce_pair() -> tuple[str, str]:
    """Return a fresh PKCE ``(code_verifier, S256 code_challenge)``."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_fingerprint(token: str) -> str:
    """Return the fingerprint the admin API shows for ``token`` (see ``SimulatorAdmin.tokens``)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class SimulatorAdmin:
    """Typed client of the ``/_sim/`` admin API of one simulator."""

    def __init__(self, base_url: str, *, timeout: float = 60.0, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    def _call(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        response = self.session.request(
            method, f"{self.base_url}/_sim{path}", json=json, params=params, timeout=self.timeout
        )
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise AdminError(method, path, response.status_code, detail)
        return response.json()

    # -- health and settings -------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Return ``{"status": "ok", "client_key", "accounts", "now"}``."""
        return self._call("GET", "/health")

    def config(self) -> dict[str, Any]:
        """Return every setting except the client secret."""
        return self._call("GET", "/config")

    def set_config(self, **values: Any) -> dict[str, Any]:
        """Change runtime settings, e.g. ``rate_limit=5, rate_window=2, page_short_prob=0.3``.

        Accepted: access_ttl, refresh_ttl, cover_ttl, code_ttl, rate_limit, rate_window,
        rate_scope ("app"|"token"), rate_retry_after, page_short_prob, page_empty_prob,
        page_duplicate_prob, oauth_error_status.  Returns the new settings.
        """
        return self._call("POST", "/config", json=values)

    # -- accounts and videos -------------------------------------------------------------
    def accounts(self) -> list[dict[str, Any]]:
        """Return every account: index, open_id, union_id, username, display_name, video counts."""
        return self._call("GET", "/accounts")["accounts"]

    def account(self, open_id: str) -> dict[str, Any]:
        """Return one account's summary plus ``user`` with every user field (ground truth)."""
        return self._call("GET", f"/accounts/{open_id}")

    def create_account(
        self,
        *,
        videos: int = 10,
        display_name: str | None = None,
        username: str | None = None,
        video_title: str | None = None,
        video_description: str | None = None,
    ) -> dict[str, Any]:
        """Create an account with ``videos`` public videos; return its summary (with ``open_id``).

        ``display_name``, ``username`` and the title and description of every video replace the
        generated ones when given (creator-controlled text of a test's choosing).
        """
        body = {
            "videos": videos,
            "display_name": display_name,
            "username": username,
            "video_title": video_title,
            "video_description": video_description,
        }
        return self._call("POST", "/accounts", json=body)

    def video_ids(self, open_id: str) -> list[str]:
        """Return the ids ``video/list`` should yield right now: public, visible, newest first."""
        return self._call("GET", f"/accounts/{open_id}/video_ids")["video_ids"]

    def videos(
        self, open_id: str, *, offset: int = 0, limit: int = 1000, at: float | None = None
    ) -> list[dict[str, Any]]:
        """Return public videos with every field but ``cover_image_url``, counts at ``at`` (or now)."""
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if at is not None:
            params["at"] = at
        return self._call("GET", f"/accounts/{open_id}/videos", params=params)["videos"]

    def video(self, video_id: str) -> dict[str, Any]:
        """Return ``{"open_id", "status": public|private|deleted|scheduled, "video"}``."""
        return self._call("GET", f"/videos/{video_id}")

    def add_videos(self, open_id: str, count: int = 1, *, create_time: int | None = None) -> list[str]:
        """Post ``count`` new videos (at ``create_time``, default the simulated now); return their ids."""
        body = {"count": count, "create_time": create_time}
        return self._call("POST", f"/accounts/{open_id}/videos", json=body)["video_ids"]

    def delete_video(self, video_id: str) -> None:
        """Delete a video: it disappears from list, query and ``video_count``."""
        self._call("DELETE", f"/videos/{video_id}")

    def privatise_video(self, video_id: str, *, private: bool = True) -> None:
        """Make a video private (``private=False`` publishes it again)."""
        self._call("POST", f"/videos/{video_id}/private", json={"private": private})

    def change_cover(self, video_id: str) -> int:
        """Give a video a new cover image (the CDN serves new bytes); return its cover version."""
        return self._call("POST", f"/videos/{video_id}/cover")["cover_version"]

    def change_avatar(self, open_id: str) -> int:
        """Give an account a new avatar image (every size); return its avatar version."""
        return self._call("POST", f"/accounts/{open_id}/avatar")["avatar_version"]

    # -- OAuth ---------------------------------------------------------------------------
    def mint_code(
        self,
        open_id: str,
        scopes: Iterable[str] | str = DEFAULT_SCOPES,
        redirect_uri: str = DEFAULT_REDIRECT_URI,
        *,
        code_challenge: str | None = None,
        code_challenge_method: str = "S256",
    ) -> str:
        """Mint an authorization code as if ``open_id`` had approved ``scopes``."""
        body = {
            "open_id": open_id,
            "scopes": scopes if isinstance(scopes, str) else list(scopes),
            "redirect_uri": redirect_uri,
            "code_challenge": code_challenge,
            "code_challenge_method": code_challenge_method,
        }
        return self._call("POST", "/codes", json=body)["code"]

    def tokens(self, open_id: str) -> list[dict[str, Any]]:
        """Describe ``open_id``'s tokens, newest first: kind, fingerprint, scopes, times, status."""
        return self._call("GET", f"/accounts/{open_id}/tokens")["tokens"]

    def expire_access_tokens(self, open_id: str) -> int:
        """Expire every live access token of ``open_id`` now; return how many."""
        return self._call("POST", f"/accounts/{open_id}/expire_access_tokens")["expired"]

    def revoke(self, open_id: str, *, access: bool = True, refresh: bool = True) -> dict[str, int]:
        """Revoke ``open_id``'s access and/or refresh tokens; return ``{"access": n, "refresh": m}``."""
        body = {"access": access, "refresh": refresh}
        return self._call("POST", f"/accounts/{open_id}/revoke", json=body)["revoked"]

    # -- clock ---------------------------------------------------------------------------
    def clock(self) -> dict[str, Any]:
        """Return ``{"now", "iso", "offset", "frozen"}`` of the simulated clock."""
        return self._call("GET", "/clock")

    def now(self) -> float:
        """Return the simulated time (Unix seconds)."""
        return self.clock()["now"]

    def advance_clock(self, seconds: float) -> float:
        """Move the simulated clock forward by ``seconds``; return the new time."""
        return self._call("POST", "/clock", json={"advance": seconds})["now"]

    def set_clock(self, at: float | str | None = None, *, frozen: bool | None = None) -> float:
        """Jump to ``at`` (Unix seconds or ISO-8601) and/or freeze/unfreeze; return the time."""
        return self._call("POST", "/clock", json={"set": at, "frozen": frozen})["now"]

    def freeze_clock(self) -> float:
        """Stop the simulated clock (``advance_clock`` still moves it)."""
        return self.set_clock(frozen=True)

    def unfreeze_clock(self) -> float:
        """Let the simulated clock run again."""
        return self.set_clock(frozen=False)

    # -- faults and rate limits ----------------------------------------------------------
    def faults(self) -> dict[str, Any]:
        """Return every endpoint's fault plan: probabilities, queued faults, slow_seconds."""
        return self._call("GET", "/faults")

    def set_faults(
        self,
        endpoint: str,
        *,
        probabilities: Mapping[str, float] | None = None,
        queue: Iterable[tuple[str, int]] | Mapping[str, int] | None = None,
        slow_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Configure faults of ``endpoint`` (user_info, video_list, video_query, oauth_token, oauth_revoke).

        :param probabilities: kind -> probability, replacing the endpoint's previous ones.
        :param queue: ``(kind, count)`` pairs (or ``{kind: count}``) appended to the deterministic
            queue: the next requests to ``endpoint`` get these faults, in order, one each.
        :param slow_seconds: delay of the ``slow`` kind.
        """
        pairs = list(queue.items()) if isinstance(queue, Mapping) else list(queue or [])
        body = {
            "endpoint": endpoint,
            "probabilities": dict(probabilities) if probabilities is not None else None,
            "next": [{"kind": kind, "count": count} for kind, count in pairs],
            "slow_seconds": slow_seconds,
        }
        return self._call("POST", "/faults", json=body)

    def fail_next(self, endpoint: str, kind: str, count: int = 1) -> dict[str, Any]:
        """Make the next ``count`` requests to ``endpoint`` get fault ``kind``."""
        return self.set_faults(endpoint, queue=[(kind, count)])

    def clear_faults(self, endpoint: str | None = None) -> dict[str, Any]:
        """Remove the faults of ``endpoint`` (of every endpoint when ``None``)."""
        return self._call("DELETE", "/faults", params={"endpoint": endpoint} if endpoint else None)

    def reset_rate_limits(self) -> None:
        """Forget every rate-limit window."""
        self._call("POST", "/ratelimit/reset")

    # -- observation ---------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Return counters: ``total``, ``rate_limited``, ``endpoints[e]`` (requests, statuses,
        errors, faults, rate_limited), ``accounts[open_id]`` and ``oauth.token[grant_type][outcome]``."""
        return self._call("GET", "/stats")

    def reset_stats(self) -> dict[str, Any]:
        """Zero every counter and empty the request log."""
        return self._call("POST", "/stats/reset")

    def requests(
        self,
        *,
        since: int = 0,
        limit: int | None = None,
        endpoint: str | None = None,
        open_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Return logged requests (oldest first): seq, method, path, endpoint, open_id, status,
        error_code, fields, body summary, fault, rate_limited, grant_type, log_id, times."""
        params = {"since": since, "limit": limit, "endpoint": endpoint, "open_id": open_id}
        return self._call("GET", "/requests", params={k: v for k, v in params.items() if v is not None})["requests"]


_UNSET: Any = object()


def _fields(fields: str | Iterable[str] | None) -> dict[str, str]:
    if fields is None:
        return {}
    return {"fields": fields if isinstance(fields, str) else ",".join(fields)}


class DisplayApi:
    """Raw Display API calls with one access token, for tests that inspect exact responses.

    Each method returns the untouched :class:`requests.Response`; pass ``body=`` to send an
    arbitrary JSON body (or ``raw=`` bytes) instead of the one built from the arguments.
    """

    def __init__(self, base_url: str, access_token: str | None, *, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token
        self.session = session or requests.Session()

    def __repr__(self) -> str:
        return f"DisplayApi(base_url={self.base_url!r})"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"} if self.access_token else {}

    def _post(self, path: str, fields: str | Iterable[str] | None, body: Any, raw: bytes | None) -> requests.Response:
        url = f"{self.base_url}{path}"
        if raw is not None:
            headers = {**self.headers, "Content-Type": "application/json"}
            return self.session.post(url, params=_fields(fields), data=raw, headers=headers, timeout=30)
        return self.session.post(url, params=_fields(fields), json=body, headers=self.headers, timeout=30)

    def user_info(self, fields: str | Iterable[str] | None) -> requests.Response:
        """``GET /v2/user/info/?fields=...`` (``fields=None`` leaves the parameter out)."""
        return self.session.get(
            f"{self.base_url}/v2/user/info/", params=_fields(fields), headers=self.headers, timeout=30
        )

    def video_list(
        self,
        fields: str | Iterable[str] | None,
        *,
        max_count: int | None = None,
        cursor: int | None = None,
        body: Any = _UNSET,
        raw: bytes | None = None,
    ) -> requests.Response:
        """``POST /v2/video/list/?fields=...`` with ``{"max_count", "cursor"}`` (each only if given)."""
        if body is _UNSET:
            body = {name: value for name, value in (("max_count", max_count), ("cursor", cursor)) if value is not None}
        return self._post("/v2/video/list/", fields, body, raw)

    def video_query(
        self,
        fields: str | Iterable[str] | None,
        video_ids: Iterable[str] = (),
        *,
        body: Any = _UNSET,
        raw: bytes | None = None,
    ) -> requests.Response:
        """``POST /v2/video/query/?fields=...`` with ``{"filters": {"video_ids": [...]}}``."""
        if body is _UNSET:
            body = {"filters": {"video_ids": list(video_ids)}}
        return self._post("/v2/video/query/", fields, body, raw)

    def list_all(
        self, fields: str | Iterable[str] = "id", *, max_count: int = 20, max_pages: int = 100_000
    ) -> tuple[list[dict[str, Any]], int]:
        """List every video the way a correct client does; return ``(videos, pages)``.

        Follows ``cursor`` while ``has_more``, keeps the first copy of each ``id`` and stops when
        the cursor does not move down.  Raises :class:`SimulatorError` on any non-``ok`` answer.
        """
        videos: dict[str, dict[str, Any]] = {}
        cursor: int | None = None
        pages = 0
        while pages < max_pages:
            answer = self.video_list(fields, max_count=max_count, cursor=cursor)
            body = answer.json()
            if answer.status_code != 200 or body["error"]["code"] != "ok":
                raise SimulatorError(f"video/list failed: {answer.status_code} {body['error']}")
            pages += 1
            for video in body["data"]["videos"]:
                videos.setdefault(video["id"], video)
            next_cursor = body["data"]["cursor"]
            if not body["data"]["has_more"] or (cursor is not None and next_cursor >= cursor):
                break
            cursor = next_cursor
        return list(videos.values()), pages


@dataclass(frozen=True)
class ConnectedAccount:
    """An account with a token pair and a :class:`DisplayApi` using its access token."""

    open_id: str
    tokens: TokenSet
    api: DisplayApi


class SimulatorConnection:
    """Where a simulator is and how to reach it as the app: URL, client credentials, admin."""

    def __init__(self, base_url: str, client_key: str, client_secret: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_key = client_key
        self.client_secret = client_secret
        self.admin = SimulatorAdmin(self.base_url)
        self.session = requests.Session()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, client_key={self.client_key!r})"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/v2/oauth/token/"

    def token_request(self, **form: str) -> dict[str, Any]:
        """POST ``form`` (plus the client credentials) to the token endpoint; return the JSON body."""
        data = {"client_key": self.client_key, "client_secret": self.client_secret, **form}
        return self.session.post(self.token_url, data=data, timeout=30).json()

    def exchange_code(
        self, code: str, redirect_uri: str = DEFAULT_REDIRECT_URI, code_verifier: str | None = None
    ) -> dict[str, Any]:
        """Exchange an authorization code; return the raw answer (success or OAuth error)."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier is not None:
            form["code_verifier"] = code_verifier
        return self.token_request(**form)

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Refresh (and so rotate) ``refresh_token``; return the raw answer."""
        return self.token_request(grant_type="refresh_token", refresh_token=refresh_token)

    def display(self, tokens: TokenSet | str | None) -> DisplayApi:
        """Return a :class:`DisplayApi` using ``tokens`` (a :class:`TokenSet` or an access token)."""
        token = tokens.access_token if isinstance(tokens, TokenSet) else tokens
        return DisplayApi(self.base_url, token, session=self.session)

    def connected_account(self, videos: int = 30, scopes: Iterable[str] | str = DEFAULT_SCOPES) -> ConnectedAccount:
        """Create a new account with ``videos`` videos and get it tokens for ``scopes``."""
        open_id = self.admin.create_account(videos=videos)["open_id"]
        tokens = self.get_tokens(open_id, scopes)
        return ConnectedAccount(open_id, tokens, self.display(tokens))

    def get_tokens(
        self,
        open_id: str,
        scopes: Iterable[str] | str = DEFAULT_SCOPES,
        redirect_uri: str = DEFAULT_REDIRECT_URI,
        *,
        pkce: bool = False,
    ) -> TokenSet:
        """Mint a code for ``open_id`` and exchange it at the real token endpoint, in one call.

        :raises SimulatorError: if the exchange answers an OAuth error.
        """
        verifier, challenge = pkce_pair() if pkce else (None, None)
        code = self.admin.mint_code(open_id, scopes, redirect_uri, code_challenge=challenge)
        answer = self.exchange_code(code, redirect_uri, verifier)
        if "access_token" not in answer:
            raise SimulatorError(f"token exchange for {open_id} failed: {answer}")
        return TokenSet.from_answer(answer)


def connect(
    base_url: str, client_key: str = DEFAULT_CLIENT_KEY, client_secret: str | None = None
) -> SimulatorConnection:
    """Wrap an already running simulator (secret default: ``$TIKTOK_SIM_CLIENT_SECRET``)."""
    secret = client_secret if client_secret is not None else os.environ.get(f"{ENV_PREFIX}CLIENT_SECRET", "")
    return SimulatorConnection(base_url, client_key, secret)


class SimulatorProcess(SimulatorConnection):
    """A simulator running as a child process; stop it with :meth:`stop` (or a ``with`` block)."""

    def __init__(
        self, process: subprocess.Popen[bytes], base_url: str, client_key: str, client_secret: str, log_path: Path
    ) -> None:
        super().__init__(base_url, client_key, client_secret)
        self.process = process
        self.log_path = log_path

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        """Return what the simulator printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process (kill it if it does not exit) and delete its log."""
        self.session.close()
        self.admin.session.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def start_simulator(*, startup_timeout: float = 30.0, **config: Any) -> SimulatorProcess:
    """Start ``python -m tiktok_sim`` on a free loopback port and wait until it answers.

    :param config: any simulator option by name (``seed=7``, ``videos=50``, ``rate_limit=5``,
        ``rate_window=2``, ``client_key="k"``, ``client_secret="s"``, ``cover_ttl=60`` ...; see
        :mod:`tiktok_sim.config`).  ``host`` defaults to 127.0.0.1 and ``port`` to a free one;
        the client secret defaults to a random one.  ``TIKTOK_SIM_*`` variables of this process
        are not passed on, so only ``config`` decides.
    :raises SimulatorError: if it exits or does not answer within ``startup_timeout`` seconds.
    """
    unknown = sorted(set(config) - set(OPTIONS_BY_NAME))
    if unknown:
        raise TypeError(f"unknown simulator option(s): {', '.join(unknown)}")
    client_secret = str(config.pop("client_secret", None) or secrets.token_urlsafe(24))
    client_key = str(config.get("client_key", DEFAULT_CLIENT_KEY))
    config.setdefault("host", "127.0.0.1")
    config.setdefault("port", 0)
    args = [sys.executable, "-m", "tiktok_sim"]
    for name, value in config.items():
        if value is not None:
            args += [OPTIONS_BY_NAME[name].flag, _flag_value(value)]
    env = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    env[f"{ENV_PREFIX}CLIENT_SECRET"] = client_secret
    package_root = str(Path(tiktok_sim.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    handle, name = tempfile.mkstemp(prefix="tiktok-sim-", suffix=".log")
    log_path = Path(name)
    with os.fdopen(handle, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + startup_timeout
    base_url: str | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log_path.read_text(errors="replace")
            log_path.unlink(missing_ok=True)
            raise SimulatorError(f"simulator exited with status {process.returncode}:\n{text}")
        match = _READY.search(log_path.read_text(errors="replace"))
        if match:
            base_url = match.group(1)
            try:
                if requests.get(f"{base_url}/_sim/health", timeout=2).status_code == 200:
                    sim = SimulatorProcess(process, base_url, client_key, client_secret, log_path)
                    atexit.register(sim.stop)
                    return sim
            except requests.RequestException:
                pass
        time.sleep(0.05)
    process.kill()
    process.wait()
    text = log_path.read_text(errors="replace")
    log_path.unlink(missing_ok=True)
    raise SimulatorError(f"simulator did not answer within {startup_timeout}s (url {base_url}):\n{text}")


@contextlib.contextmanager
def running_simulator(**config: Any) -> Iterator[SimulatorProcess]:
    """Run a simulator for the ``with`` block; see :func:`start_simulator` for ``config``."""
    sim = start_simulator(**config)
    try:
        yield sim
    finally:
        sim.stop()
        atexit.unregister(sim.stop)
