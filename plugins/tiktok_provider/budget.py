"""One rate budget per app and endpoint for the whole cluster, in Postgres or Redis.

TikTok counts requests per app and endpoint over a sliding window. Airflow runs every task in its
own process on any worker, so pacing in one process (:class:`~tiktok_provider.ratelimit.SlidingWindowLimiter`)
does not bound what the cluster sends. Here every process draws from one shared budget:

- **Postgres** (the default: the warehouse every worker already connects to): ``limit`` rows per
  (app, endpoint) in ``tiktok.rate_budget_slots``, each with ``free_at``. Taking a slot is one
  statement (an ``UPDATE`` of the oldest free row picked ``FOR UPDATE SKIP LOCKED``) that sets
  ``free_at = now() + window``: that is the slot's *lease*. Releasing it (the answer came back)
  sets ``free_at = now() + window`` again, because the API stamps a request on arrival. A process
  that dies holding a slot never releases it, and the slot comes back when its lease ends, one
  window after it was taken: nothing leaks, nothing blocks longer than a window. Times are the
  database's clock (``now()``), never a worker's.
- **Redis** (when configured): the same in a Lua script over a sorted set of holds scored by
  ``free_at`` (milliseconds of the Redis server's clock).
- **Pause**: a 429 (with or without ``Retry-After``) pauses the whole app's endpoint, in the
  shared store, until a time every process honours before taking a slot.
- **Priority**: ``interactive`` and ``normal`` may take any free slot; ``bulk`` (full backfills)
  only one that leaves ``reserve`` of the window's slots free for the others, and none at all
  while a caller above bulk is waiting for a slot (it marks the endpoint "wanted" for half a
  second each time it finds none). So a snapshot runs as fast as it would alone, and a caller that
  arrives while a backfill has the endpoint busy finds the reserve free and starts at once.

The per-process limiter stays as the fallback: when the connection says ``rate_budget=process``,
when no shared store can be found (logged once per process, WARNING), and while the store is
unreachable (a Postgres restart): then the process paces itself at ``fallback_share`` of the limit,
logs that, and retries the store every few seconds.

Nothing here imports the project's own packages: the provider stands alone.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from tiktok_provider.ratelimit import SlidingWindowLimiter

log = logging.getLogger(__name__)

PRIORITIES = ("interactive", "normal", "bulk")
BACKENDS = ("postgres", "redis", "process")
#: How long a store that failed is left alone before the next reconnect attempt.
RETRY_STORE_SECONDS = 2.0
#: The longest one poll for a free slot sleeps (the store's hint is usually shorter).
MAX_POLL_SECONDS = 0.25
#: Above this many requests per window a shared store would hold that many rows per endpoint for a
#: limit that is no real API's (tests set 100,000 to mean "unlimited"): such a limit is paced per process.
MAX_SHARED_SLOTS = 10_000
#: How long a waiting caller above bulk keeps bulk callers out after each attempt that found no slot
#: (waiters ask again at least every MAX_POLL_SECONDS, so bulk is out exactly while someone waits).
WANT_SECONDS = 0.5
#: The longest one budget statement may run (a lock held by a migration, a stuck server): past it the
#: store counts as unreachable and the process paces itself, instead of the task hanging for ever.
STATEMENT_TIMEOUT_MS = 5000
#: TCP keepalives on the budget connection, so that a server gone silent is noticed in seconds too.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}


def app_key(base_url: str, client_key: str) -> str:
    """The app's name in the shared store: a hash, so the client key itself is never stored."""
    return hashlib.sha256(f"{base_url}\n{client_key}".encode()).hexdigest()[:24]


def reserve_slots(limit: int, reserve: float) -> int:
    """How many of ``limit`` slots a bulk caller must leave free (``ceil``: at least the share asked)."""
    if not 0 <= reserve < 1:
        raise ValueError(f"rate_budget_reserve must be in [0, 1), got {reserve}")
    return min(limit - 1, math.ceil(limit * reserve - 1e-9))


def skip_for(priority: str, limit: int, reserve: float) -> int:
    """The number of free slots a caller of ``priority`` must leave to others (0 unless bulk)."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
    return reserve_slots(limit, reserve) if priority == "bulk" else 0


def fallback_limit(limit: int, share: float) -> int:
    """The per-process limit while the shared store is unreachable: a conservative share, at least 1."""
    return max(1, int(limit * share))


def poll_delay(hint: float | None) -> float:
    """How long to sleep before asking the store again, from its hint (seconds until a slot frees)."""
    base = MAX_POLL_SECONDS if hint is None else min(max(hint, 0.002), MAX_POLL_SECONDS)
    return base * random.uniform(1.0, 1.2)  # spread the waiters out


class StoreUnavailable(Exception):
    """The shared store could not be reached or answered with an error."""


# -- stores -----------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    """An error's class and first line: what a budget error may say (never a URL or a parameter)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class PostgresStore:
    """The shared budget in the warehouse's ``tiktok.rate_budget_slots`` / ``rate_budget_pauses``."""

    kind = "postgres"

    ACQUIRE = """
WITH state AS (
    SELECT paused_until, wanted_until FROM tiktok.rate_budget_state
    WHERE app = %(app)s AND endpoint = %(endpoint)s
), pick AS (
    SELECT slot_no FROM tiktok.rate_budget_slots
    WHERE app = %(app)s AND endpoint = %(endpoint)s AND slot_no < %(limit)s AND free_at <= now()
      AND NOT EXISTS (
          SELECT 1 FROM state WHERE paused_until > now() OR (%(skip)s > 0 AND wanted_until > now())
      )
    ORDER BY free_at
    LIMIT 1 OFFSET %(skip)s
    FOR UPDATE SKIP LOCKED
), took AS (
    UPDATE tiktok.rate_budget_slots s
    SET free_at = now() + make_interval(secs => %(window)s), holder = %(holder)s
    FROM pick
    WHERE s.app = %(app)s AND s.endpoint = %(endpoint)s AND s.slot_no = pick.slot_no
    RETURNING s.slot_no
), want AS (
    -- a caller above bulk that found nothing keeps bulk callers out while it waits
    INSERT INTO tiktok.rate_budget_state (app, endpoint, wanted_until)
    SELECT %(app)s, %(endpoint)s, now() + make_interval(secs => %(want)s)
    WHERE %(skip)s = 0 AND NOT EXISTS (SELECT 1 FROM took)
    ON CONFLICT (app, endpoint) DO UPDATE SET wanted_until = excluded.wanted_until
)
SELECT (SELECT slot_no FROM took),
       extract(epoch FROM coalesce(
           (SELECT paused_until FROM state WHERE paused_until > now()),
           (SELECT min(free_at) FROM tiktok.rate_budget_slots
            WHERE app = %(app)s AND endpoint = %(endpoint)s AND slot_no < %(limit)s AND free_at > now())
       ) - now())
"""
    RELEASE = """
UPDATE tiktok.rate_budget_slots SET free_at = now() + make_interval(secs => %(window)s), holder = NULL
WHERE app = %(app)s AND endpoint = %(endpoint)s AND slot_no = %(slot)s AND holder = %(holder)s
"""
    ENSURE = """
INSERT INTO tiktok.rate_budget_slots (app, endpoint, slot_no, free_at)
SELECT %(app)s, %(endpoint)s, n, '-infinity' FROM generate_series(0, %(limit)s - 1) AS n
ON CONFLICT DO NOTHING
"""
    PAUSE = """
INSERT INTO tiktok.rate_budget_state (app, endpoint, paused_until)
VALUES (%(app)s, %(endpoint)s, now() + make_interval(secs => %(seconds)s))
ON CONFLICT (app, endpoint) DO UPDATE
SET paused_until = greatest(tiktok.rate_budget_state.paused_until, excluded.paused_until)
"""

    PARAMS = ("app", "endpoint", "limit", "window", "skip", "holder", "want")

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._positional = self.ACQUIRE
        for n, name in enumerate(self.PARAMS, 1):
            self._positional = self._positional.replace(f"%({name})s", f"${n}")
        self._connect = connect
        self._conn: Any = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._ensured: set[tuple[str, str, int]] = set()
        #: seconds of database round trip per acquire attempt (the last 10,000)
        self.db_seconds: deque[float] = deque(maxlen=10_000)

    def _cursor_run(self, sql: str, params: dict[str, Any], *, fetch: bool, timed: bool = False) -> Any:
        import psycopg2

        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's socket is not ours to use
                self._conn, self._pid, self._ensured = None, os.getpid(), set()
            try:
                return self._run_once(sql, params, fetch=fetch, timed=timed)
            except psycopg2.Error as exc:
                died = self._conn is not None and self._conn.closed
                self._drop_connection()
                if not died:
                    raise StoreUnavailable(_first_line(exc)) from None
            # The session died (a server restart, a pooler or an admin ended it), not the server:
            # one fresh session decides. Only if that fails too is the store down for a window.
            try:
                return self._run_once(sql, params, fetch=fetch, timed=timed)
            except psycopg2.Error as exc:
                self._drop_connection()
                raise StoreUnavailable(_first_line(exc)) from None

    def _drop_connection(self) -> None:
        import psycopg2

        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(psycopg2.Error):
                conn.close()
        self._ensured.clear()

    def _run_once(self, sql: str, params: dict[str, Any], *, fetch: bool, timed: bool) -> Any:
        if self._conn is None or self._conn.closed:
            conn = self._connect()
            conn.autocommit = True
            with conn.cursor() as cur:
                # A crash may lose the last few budget writes: harmless (the leases end in a
                # window), and not waiting for the WAL flush is most of an acquire's cost.
                cur.execute("SET synchronous_commit = off")
                cur.execute(f"SET statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")
                # Planned once per connection, not per request.
                types = "text, text, int, float8, int, text, float8"
                cur.execute(f"PREPARE tiktok_budget_acquire ({types}) AS {self._positional}")
            self._conn = conn
        with self._conn.cursor() as cur:
            started = time.perf_counter()
            cur.execute(sql, params)
            row = cur.fetchone() if fetch else None
            if timed:  # the round trip alone, not a (re)connect
                self.db_seconds.append(time.perf_counter() - started)
            return row

    def try_acquire(
        self, app: str, endpoint: str, limit: int, window: float, skip: int, holder: str
    ) -> tuple[Any, float | None]:
        if (app, endpoint, limit) not in self._ensured:
            self._cursor_run(self.ENSURE, {"app": app, "endpoint": endpoint, "limit": limit}, fetch=False)
            self._ensured.add((app, endpoint, limit))
        params = {"app": app, "endpoint": endpoint, "limit": limit, "window": window, "skip": skip, "holder": holder}
        params["want"] = WANT_SECONDS
        sql = "EXECUTE tiktok_budget_acquire ({})".format(", ".join(f"%({name})s" for name in self.PARAMS))
        slot, wait = self._cursor_run(sql, params, fetch=True, timed=True)
        return slot, (float(wait) if wait is not None else None)

    def release(self, app: str, endpoint: str, window: float, slot: Any, holder: str) -> None:
        params = {"app": app, "endpoint": endpoint, "window": window, "slot": slot, "holder": holder}
        self._cursor_run(self.RELEASE, params, fetch=False)

    def pause(self, app: str, endpoint: str, seconds: float) -> None:
        self._cursor_run(self.PAUSE, {"app": app, "endpoint": endpoint, "seconds": seconds}, fetch=False)


class RedisStore:
    """The shared budget in Redis: a sorted set of holds per (app, endpoint) and a pause key."""

    kind = "redis"

    # KEYS: holds, pause, wanted. ARGV: limit, window_ms, skip, token, want_ms. Returns {taken, wait_ms}.
    ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then return {0, paused - now} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit, window, skip = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local wanted = skip > 0 and redis.call('EXISTS', KEYS[3]) == 1
local n = redis.call('ZCARD', KEYS[1])
if not wanted and n + skip < limit then
  redis.call('ZADD', KEYS[1], now + window, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], 2 * window)
  return {1, 0}
end
if skip == 0 then redis.call('SET', KEYS[3], '1', 'PX', tonumber(ARGV[5])) end
if n == 0 then return {0, 50} end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tonumber(oldest[2]) - now}
"""
    # KEYS: holds. ARGV: window_ms, token. A hold whose lease already ended is not brought back.
    RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[1]))
return 1
"""
    # KEYS: pause. ARGV: seconds_ms. Keeps the later of the current and the new pause.
    PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untl = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > cur then redis.call('SET', KEYS[1], untl, 'PX', tonumber(ARGV[1]) + 1000) end
return 1
"""

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: Any = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._scripts: dict[str, Any] = {}
        self._loaded: set[str] = set()
        self.db_seconds: deque[float] = deque(maxlen=10_000)

    def _run(self, script: str, keys: list[str], args: list[Any], *, timed: bool = False) -> Any:
        import redis

        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = redis.Redis.from_url(self._url, socket_timeout=2, socket_connect_timeout=2)
                self._pid = os.getpid()
                self._scripts, self._loaded = {}, set()
            client = self._client
            if script not in self._scripts:
                self._scripts[script] = client.register_script(script)
            fn = self._scripts[script]
        try:
            if not timed:
                return fn(keys=keys, args=args)
            fresh = fn.sha not in self._loaded
            started = time.perf_counter()
            out = fn(keys=keys, args=args)
            if not fresh:  # the round trip alone, not the connect and SCRIPT LOAD of the first call
                self.db_seconds.append(time.perf_counter() - started)
            self._loaded.add(fn.sha)
            return out
        except redis.RedisError as exc:
            with self._lock:
                self._client = None
            raise StoreUnavailable(type(exc).__name__) from None

    @staticmethod
    def _keys(app: str, endpoint: str) -> tuple[str, str, str]:
        base = f"tiktok:budget:{app}:{endpoint}"
        return base, f"{base}:paused", f"{base}:wanted"

    def try_acquire(
        self, app: str, endpoint: str, limit: int, window: float, skip: int, holder: str
    ) -> tuple[Any, float | None]:
        token = f"{holder}:{uuid.uuid4().hex}"
        keys = list(self._keys(app, endpoint))
        args = [limit, int(window * 1000), skip, token, int(WANT_SECONDS * 1000)]
        taken, wait_ms = self._run(self.ACQUIRE, keys, args, timed=True)
        return (token if taken else None), int(wait_ms) / 1000

    def release(self, app: str, endpoint: str, window: float, slot: Any, holder: str) -> None:
        self._run(self.RELEASE, [self._keys(app, endpoint)[0]], [int(window * 1000), slot])

    def pause(self, app: str, endpoint: str, seconds: float) -> None:
        self._run(self.PAUSE, [self._keys(app, endpoint)[1]], [max(1, int(seconds * 1000))])


# -- the limiter the hook uses ----------------------------------------------------------------


class ProcessBudget:
    """The per-process limiter behind the shared budget's interface (priority and pause are local)."""

    shared = False

    def __init__(self, limiter: SlidingWindowLimiter) -> None:
        self.limiter = limiter
        self._paused_until = 0.0

    @contextmanager
    def slot(self, priority: str = "normal") -> Iterator[float]:
        waited = 0.0
        delay = self._paused_until - time.monotonic()
        if delay > 0:
            time.sleep(delay)
            waited += delay
        with self.limiter.slot() as more:
            yield waited + more

    def pause(self, seconds: float) -> None:
        """Nothing to tell: the caller's retry waits the 429 out, and no other process can be told without a store.

        (Pausing here too made the next request of *this* process wait a second time, in real time even
        where the hook's sleep is a test's recorder, and carried the pause into the process's next hook.)
        """


class SharedBudget:
    """One endpoint's slice of the shared budget, with :class:`SlidingWindowLimiter`'s ``slot()``."""

    shared = True

    def __init__(
        self,
        store: PostgresStore | RedisStore,
        app: str,
        endpoint: str,
        limit: int,
        window: float,
        *,
        reserve: float = 0.2,
        fallback_share: float = 0.125,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError(f"rate limit must be >= 1 per window > 0 s, got {limit} per {window} s")
        reserve_slots(limit, reserve)  # validates
        self.store = store
        self.app = app
        self.endpoint = endpoint
        self.limit = limit
        self.window = window
        self.reserve = reserve
        self.fallback = SlidingWindowLimiter(fallback_limit(limit, fallback_share), window)
        self._sleep = sleep
        self._holder = f"{socket.gethostname()}:{os.getpid()}"[:200]
        self._down_until = 0.0
        self._cooldown_until = 0.0
        self._paused_locally_until = 0.0

    def _store_down(self, exc: StoreUnavailable) -> None:
        if self._down_until == 0.0:
            # What the cluster sent in the last window is not known here: wait it out before pacing
            # alone, or the two together could go over the limit.
            self._cooldown_until = time.monotonic() + self.window
            log.warning(
                "Rate budget store (%s) unreachable for %s (%s); waiting one window, then pacing this process "
                "alone at %d per %.0fs until it is back",
                self.store.kind,
                self.endpoint,
                exc,
                self.fallback.limit,
                self.window,
            )
        self._down_until = time.monotonic() + RETRY_STORE_SECONDS

    def _store_back(self) -> None:
        """Hand the requests sent alone in the last window to the shared store, so the others count them."""
        now = time.monotonic()
        for released in list(self.fallback._released):
            left = self.window - (now - released)
            if left > 0:
                self.store.try_acquire(self.app, self.endpoint, self.limit, left, 0, self._holder)
        log.warning("Rate budget store (%s) is back for %s", self.store.kind, self.endpoint)
        self._down_until = 0.0

    def acquire(self, priority: str = "normal") -> tuple[float, Any]:
        """Block until a request may go out; return (seconds waited, the hold to release)."""
        skip = skip_for(priority, self.limit, self.reserve)
        waited = 0.0
        while True:
            if time.monotonic() >= self._down_until:
                try:
                    if self._down_until:
                        self._store_back()
                    slot, hint = self.store.try_acquire(
                        self.app, self.endpoint, self.limit, self.window, skip, self._holder
                    )
                except StoreUnavailable as exc:
                    self._store_down(exc)
                else:
                    if slot is not None:
                        return waited, ("shared", slot)
                    delay = poll_delay(hint)
                    self._sleep(delay)
                    waited += delay
                    continue
            # the store is down: pace this process alone, at its conservative share
            delay = max(self._paused_locally_until, self._cooldown_until) - time.monotonic()
            if delay > 0:
                self._sleep(delay)
                waited += delay
            waited += self.fallback.acquire()
            return waited, ("local", None)

    def release(self, hold: tuple[str, Any]) -> None:
        where, slot = hold
        if where == "local":
            self.fallback.release()
            return
        try:
            self.store.release(self.app, self.endpoint, self.window, slot, self._holder)
        except StoreUnavailable as exc:
            # the slot's lease (taken with it) frees it one window after it was taken
            self._store_down(exc)

    @contextmanager
    def slot(self, priority: str = "normal") -> Iterator[float]:
        """Hold a slot around one request; yield the seconds waited for it."""
        waited, hold = self.acquire(priority)
        try:
            yield waited
        finally:
            self.release(hold)

    def pause(self, seconds: float) -> None:
        """Stop every process of the app from sending to this endpoint for ``seconds`` (a 429)."""
        self._paused_locally_until = max(self._paused_locally_until, time.monotonic() + seconds)
        try:
            self.store.pause(self.app, self.endpoint, seconds)
        except StoreUnavailable as exc:
            self._store_down(exc)


# -- from the connection's settings -----------------------------------------------------------

_stores: dict[tuple[str, str], PostgresStore | RedisStore] = {}
_budgets: dict[tuple[Any, ...], SharedBudget | ProcessBudget] = {}
_registry_lock = threading.Lock()
_warned_process: set[str] = set()


def _postgres_connector(target: str) -> Callable[[], Any]:
    """A function opening a psycopg2 connection to a SQLAlchemy/libpq URL or an Airflow connection id."""
    import psycopg2

    if "://" in target:
        _scheme, rest = target.split("://", 1)
        dsn = "postgresql://" + rest  # postgresql+psycopg2:// and the like
        return lambda: psycopg2.connect(dsn, connect_timeout=3, application_name="tiktok_rate_budget", **KEEPALIVES)
    from airflow.hooks.base import BaseHook

    conn = BaseHook.get_connection(target)

    def connect() -> Any:
        return psycopg2.connect(
            host=conn.host or "localhost",
            port=conn.port or 5432,
            user=conn.login or None,
            password=conn.password or None,
            dbname=conn.schema or None,
            connect_timeout=3,
            application_name="tiktok_rate_budget",
            **KEEPALIVES,
        )

    return connect


def _redis_url(target: str) -> str:
    if "://" in target:
        return target
    from airflow.hooks.base import BaseHook

    conn = BaseHook.get_connection(target)
    db = (conn.extra_dejson or {}).get("db", 0)
    auth = f":{conn.password}@" if conn.password else ""
    return f"redis://{auth}{conn.host or 'localhost'}:{conn.port or 6379}/{db}"


def _process_budget(
    base_url: str, endpoint: str, limit: int, window: float, why: str, *, level: int = logging.WARNING
) -> ProcessBudget:
    from tiktok_provider.ratelimit import limiter_for

    if why not in _warned_process:
        _warned_process.add(why)
        log.log(level, "No shared rate budget (%s): this process paces itself alone; more processes mean 429s", why)
    return ProcessBudget(limiter_for(base_url, endpoint, limit, window))


def budget_for(cfg: Any, endpoint: str) -> SharedBudget | ProcessBudget:
    """The process-wide budget for one endpoint under the connection ``cfg`` (a ``TikTokConnectionConfig``)."""
    backend = cfg.rate_budget
    limit, window = cfg.rate_limit_per_minute, cfg.rate_limit_window_seconds
    key = (backend, cfg.rate_budget_conn_id, cfg.rate_budget_redis_url, cfg.base_url, cfg.client_key, endpoint)
    key += (limit, window, cfg.rate_budget_reserve)
    with _registry_lock:
        if key in _budgets:
            return _budgets[key]
        if backend not in BACKENDS:
            budget: SharedBudget | ProcessBudget = _process_budget(
                cfg.base_url, endpoint, limit, window, f"unknown rate_budget {backend!r}"
            )
        elif backend == "process":
            budget = _process_budget(cfg.base_url, endpoint, limit, window, "the connection says rate_budget=process")
        elif limit > MAX_SHARED_SLOTS:
            why = f"a limit above {MAX_SHARED_SLOTS} per window is not shared"
            budget = _process_budget(cfg.base_url, endpoint, limit, window, why, level=logging.INFO)
        else:
            target = cfg.rate_budget_redis_url if backend == "redis" else cfg.rate_budget_conn_id
            try:
                if not target:
                    raise ValueError(f"no {'rate_budget_redis_url' if backend == 'redis' else 'rate_budget_conn_id'}")
                store = _stores.get((backend, target))
                if store is None:
                    if backend == "redis":
                        store = RedisStore(_redis_url(target))
                    else:
                        store = PostgresStore(_postgres_connector(target))
                    _stores[(backend, target)] = store
            except Exception as exc:  # a missing Airflow connection, a bad URL: no shared store
                budget = _process_budget(
                    cfg.base_url, endpoint, limit, window, f"{backend} store not configured: {type(exc).__name__}"
                )
            else:
                budget = SharedBudget(
                    store,
                    app_key(cfg.base_url, cfg.client_key),
                    endpoint,
                    limit,
                    window,
                    reserve=cfg.rate_budget_reserve,
                    fallback_share=cfg.rate_budget_fallback_share,
                )
        _budgets[key] = budget
        return budget
