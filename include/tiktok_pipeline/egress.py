"""Which hosts a worker may fetch an untrusted link from: public addresses only, unless allowed by name.

Cover and avatar links come from TikTok's answers. A hostile or compromised answer (or a
connection pointed at the wrong place) could make a worker fetch ``http://169.254.169.254/...``
(a cloud's metadata, with its credentials), ``http://127.0.0.1:5432`` or ``http://10.0.0.7/admin``
from inside the cluster. So a link is fetched only from a globally routable unicast address:
never loopback, private (RFC 1918, ``fc00::/7``), link-local (``169.254/16``, ``fe80::/10``),
unspecified, multicast, reserved, shared (``100.64/10``) or another special-purpose address, nor
an IPv6 form of one (IPv4-mapped ``::ffff:a.b.c.d``, NAT64, 6to4).

- **The address checked is the address connected to.** :class:`GuardedAdapter` checks the peer
  address of every new socket, after the connect and before a byte is sent: a name that resolves
  to a public address when asked and to a private one when connected (DNS rebinding) is caught,
  and so is every spelling of a literal address (``2130706433``, ``0177.0.0.1``, ``0x7f.1``,
  ``[::ffff:127.0.0.1]``), whatever the resolver makes of it. A literal is also refused before
  any connection (:meth:`HostPolicy.check_literal`), with its class in the message.
- **Through a proxy** (``HTTP(S)_PROXY``) the worker connects to the proxy, which resolves the
  name itself: the worker checks the addresses the name resolves to here, and the proxy's own
  egress rules do the rest (a rebinding name is not caught there).
- **A deadline for the whole download** (:class:`Deadline`, ``with adapter.within(deadline)``): a
  read timeout bounds each wait for the next piece only, so a server dripping its headers a byte at
  a time, answering ``100 Continue`` without end, or stalling a TLS handshake would hold a worker
  for ever. Within a deadline each address is connected to with what is left of it, and at the
  deadline every socket the download used is shut down, whatever read is waiting on it.
- **Allowed by name**: a non-public host is fetched from when it is the TikTok connection's API
  host and port (the simulator serves its covers from its own, private host) or listed in
  ``[tiktok] cover_archive_private_hosts`` (``host`` for any port, ``host:port`` for one).
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from requests.adapters import HTTPAdapter
from requests.utils import select_proxy
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

from tiktok_provider.errors import escaped

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}

_PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

#: Why an address is not fetched from, in the order they are told (the first that holds).
_CLASSES: tuple[tuple[str, Callable[[Any], bool]], ...] = (
    ("unspecified", lambda a: a.is_unspecified),
    ("loopback", lambda a: a.is_loopback),
    ("link-local", lambda a: a.is_link_local),
    ("multicast", lambda a: a.is_multicast),
    ("private", lambda a: any(a in net for net in _PRIVATE if net.version == a.version)),
    ("shared (carrier-grade NAT)", lambda a: a in _SHARED),
    ("site-local", lambda a: getattr(a, "is_site_local", False)),
    ("reserved", lambda a: a.is_reserved),
    ("special-purpose", lambda a: not a.is_global),
)


def address_class(address: IPAddress) -> str | None:
    """Return why ``address`` is not fetched from (``"loopback"``, ``"private"`` ...), or ``None`` if it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped
        form = "IPv4-mapped"
        if embedded is None and address in _NAT64:
            embedded, form = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64"
        if embedded is None and address.sixtofour is not None:
            embedded, form = address.sixtofour, "6to4"
        if embedded is not None:
            inner = address_class(embedded)
            return f"{form} {inner}" if inner else None
    for name, test in _CLASSES:
        if test(address):
            return name
    return None


_V4_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


def _ipv4_any_spelling(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address of ``host`` read the way ``inet_aton`` (and so the resolver) reads it, or ``None``.

    One to four parts, each decimal, octal (a leading ``0``) or hex (``0x``); the last part fills the
    bytes that are left: ``2130706433``, ``0177.1``, ``0x7f.0.0.1`` and ``127.1`` are all 127.0.0.1.
    """
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_V4_PART.fullmatch(p) for p in parts):
        return None
    values = [int(p[2:], 16) if p[:2] in ("0x", "0X") else int(p, 8 if p.startswith("0") else 10) for p in parts]
    *head, last = values
    if any(v > 255 for v in head) or last >= 1 << (8 * (5 - len(values))):
        return None
    number = 0
    for v in head:
        number = number << 8 | v
    return ipaddress.IPv4Address(number << (8 * (5 - len(values))) | last)


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells (IPv4 in any ``inet_aton`` spelling, IPv6 with or without brackets), or ``None``."""
    host = host.strip().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return None
    return _ipv4_any_spelling(host)


def host_key(host: str) -> str:
    """``host`` as compared with the allowed ones: lower case, no trailing dot or brackets, an address canonical."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    address = literal_address(host)
    return str(address) if address is not None else host


def _split_entry(entry: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address -> ``(host key, port or None)``."""
    entry = entry.strip()
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", entry)
    if match:
        return host_key(match.group(1)), int(match.group(2)) if match.group(2) else None
    if entry.count(":") == 1:
        host, port = entry.split(":")
        if not port.isdigit():
            raise ValueError(f"not a host or host:port: {entry!r}")
        return host_key(host), int(port)
    return host_key(entry), None


class BlockedAddress(Exception):
    """A link's host is (or resolved to, or connected to) an address that is not public, and is not allowed."""

    def __init__(self, host: str, address: IPAddress | str, why: str, *, literal: bool = False) -> None:
        self.host, self.address, self.why = host, str(address), why
        named = escaped(host)  # from a link: a zone id (``fe80::1%25...``) may be anything, of any length
        if not literal:
            where = f"host {named} resolved to {address},"
        elif host.strip("[]").lower() != self.address:
            where = f"host {named} is {address},"  # another spelling of the address
        else:
            where = f"host {named} is"
        super().__init__(f"{where} not a public address ({why})")


@dataclass(frozen=True)
class HostPolicy:
    """The non-public hosts allowed: by name on any port (``hosts``) or on one port (``host_ports``)."""

    hosts: frozenset[str] = frozenset()
    host_ports: frozenset[tuple[str, int]] = frozenset()

    @classmethod
    def of(cls, entries: Iterable[str] = (), *, api_url: str | None = None) -> HostPolicy:
        """The policy allowing ``entries`` (``host`` / ``host:port``) and the API's own host and port."""
        hosts, host_ports = set(), set()
        for entry in entries:
            if not entry.strip():
                continue
            host, port = _split_entry(entry)
            if port is None:
                hosts.add(host)
            else:
                host_ports.add((host, port))
        if api_url:
            parts = urlsplit(api_url)
            if parts.hostname:
                host_ports.add((host_key(parts.hostname), parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 443)))
        return cls(frozenset(hosts), frozenset(host_ports))

    def allows(self, host: str, port: int) -> bool:
        """Whether ``host:port`` may be fetched from whatever its address."""
        key = host_key(host)
        return key in self.hosts or (key, port) in self.host_ports

    def check_address(self, host: str, port: int, address: str | IPAddress, *, literal: bool = False) -> None:
        """Raise :class:`BlockedAddress` unless ``address`` (of ``host``) is public or ``host:port`` is allowed."""
        if isinstance(address, str):
            address = ipaddress.ip_address(address.split("%", 1)[0])
        why = address_class(address)
        if why is not None and not self.allows(host, port):
            raise BlockedAddress(host, address, why, literal=literal)

    def check_literal(self, host: str, port: int) -> None:
        """Refuse a host that spells a non-public address (no DNS asked); a name passes (checked on connect)."""
        address = literal_address(host)
        if address is not None:
            self.check_address(host, port, address, literal=True)

    def check_url(self, url: str) -> tuple[str, int] | None:
        """:meth:`check_literal` for the host of ``url``; return its ``(host, port)`` (``None`` if it has none)."""
        parts = urlsplit(url)
        try:
            host, port = parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme.lower(), 80)
        except ValueError:  # a bad port: the HTTP client refuses the link itself
            return None
        if not host:
            return None
        self.check_literal(host, port)
        return host, port

    def check_resolved(self, host: str, port: int) -> None:
        """Refuse a host any of whose addresses here is not public (for a proxied request; the proxy resolves again).

        A name that does not resolve here passes: behind a proxy it may well be the proxy's to resolve.
        """
        if self.allows(host, port):
            return
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return
        for info in infos:
            self.check_address(host, port, str(info[4][0]))


class Deadline:
    """The instant one whole download must end by: its connects, answers, redirects, body and retries.

    Enter it (``with Deadline(60) as deadline, adapter.within(deadline):``) and at the instant the
    process's watchdog thread shuts down every socket the download used (:meth:`watch`): a read
    waiting on one ends at once, with a connection error that :attr:`passed` tells apart from a
    network failure. Each socket is watched through a duplicate of its own, so the download closing
    its socket first never lets the watchdog touch another connection that reused the number.
    """

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self.at = clock() + seconds
        self._lock = threading.Lock()
        self._twins: list[socket.socket] = []
        self._cut = self._over = False

    def remaining(self) -> float:
        """Seconds left (``<= 0`` once passed)."""
        return self.at - self._clock()

    @property
    def passed(self) -> bool:
        """Whether the instant has come (and the download's sockets were shut down)."""
        return self._cut or self.remaining() <= 0

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down at the deadline (at once if it has passed)."""
        try:
            twin = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
        except OSError:  # already closed: nothing to cut
            return
        with self._lock:
            if self._over:
                twin.close()
                return
            self._twins.append(twin)
            if self._cut:
                _shut(twin)

    def _expire(self) -> None:
        with self._lock:
            if self._over:
                return
            self._cut = True
            for twin in self._twins:
                _shut(twin)

    def __enter__(self) -> Deadline:
        _WATCHDOG.add(self, self.remaining())
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._over = True  # the watchdog passes it by when its instant comes
            for twin in self._twins:
                twin.close()
            self._twins.clear()


class _Watchdog:
    """One thread for every deadline of the process: it sleeps until the nearest, and cuts it.

    A thread per download cost more than a cover served from nearby; this one is started on first
    use, and again in a forked child (a task process), which has no copy of it.
    """

    def __init__(self) -> None:
        self._forget()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._ready = threading.Condition()
        self._due: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline, seconds: float) -> None:
        with self._ready:
            heapq.heappush(self._due, (time.monotonic() + max(0.0, seconds), next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="egress-deadlines", daemon=True)
                self._thread.start()
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._ready.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, deadline = heapq.heappop(self._due)
            deadline._expire()  # a deadline whose download is over does nothing


_WATCHDOG = _Watchdog()


def _shut(sock: socket.socket) -> None:
    with suppress(OSError):  # not connected (any more)
        sock.shutdown(socket.SHUT_RDWR)


def _connect_within(connection: Any, deadline: Deadline) -> socket.socket:
    """urllib3's connect, except that each address of the host is tried with what is left of ``deadline``.

    urllib3 gives every address the whole connect timeout: a name with many addresses that each
    hang would add them up. The name itself is resolved by the system resolver, within its timeout.
    """
    host = connection._dns_host.strip("[]")
    if deadline.passed:
        raise ConnectTimeoutError(connection, f"Connection to {connection.host} not tried: past the deadline")
    try:
        infos = socket.getaddrinfo(host, connection.port, allowed_gai_family(), socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NameResolutionError(connection.host, connection, exc) from exc
    timeout = connection.timeout if isinstance(connection.timeout, int | float) else None
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        left = deadline.remaining()
        if left <= 0:
            break
        sock = socket.socket(family, kind, proto)
        try:
            for option in connection.socket_options or ():
                sock.setsockopt(*option)
            sock.settimeout(left if timeout is None else min(timeout, left))
            if connection.source_address:
                sock.bind(connection.source_address)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        sys.audit("http.client.connect", connection, connection.host, connection.port)
        return sock
    if error is None or isinstance(error, TimeoutError):
        raise ConnectTimeoutError(connection, f"Connection to {connection.host} timed out (deadline)") from error
    raise NewConnectionError(connection, f"Failed to establish a new connection: {error}") from error


def _guarded_pools(
    policy: HostPolicy, deadline: Callable[[], Deadline | None] = lambda: None
) -> dict[str, type[HTTPConnectionPool]]:
    """Connection pools whose every new socket is checked against ``policy`` once connected.

    :param deadline: the deadline of the download under way in this thread, if any.
    """

    class Guarded:
        def _new_conn(self) -> socket.socket:
            current = deadline()
            sock = super()._new_conn() if current is None else _connect_within(self, current)  # type: ignore[misc]
            try:
                policy.check_address(self.host, self.port, sock.getpeername()[0])  # type: ignore[attr-defined]
            except BaseException:
                sock.close()
                raise
            if current is not None:
                current.watch(sock)  # before the TLS handshake: a dripping one is cut too
            return sock

        def request(self, *args: Any, **kwargs: Any) -> Any:
            current = deadline()
            if current is not None and self.sock is not None:  # type: ignore[attr-defined]
                current.watch(self.sock)  # type: ignore[attr-defined]  # a kept-alive connection, reused
            return super().request(*args, **kwargs)  # type: ignore[misc]

    class GuardedHTTPConnection(Guarded, HTTPConnection):
        pass

    class GuardedHTTPSConnection(Guarded, HTTPSConnection):
        pass

    class GuardedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPConnectionPool, "https": GuardedHTTPSConnectionPool}


class GuardedAdapter(HTTPAdapter):
    """A requests transport that connects only to public addresses, or to hosts ``policy`` allows.

    Mount it on a session for ``http://`` and ``https://``; a refused request raises
    :class:`BlockedAddress` (never a ``requests`` error, so it is not retried).
    """

    def __init__(self, policy: HostPolicy, **kwargs: Any) -> None:
        self.policy = policy
        self._current = threading.local()
        super().__init__(**kwargs)

    @property
    def deadline(self) -> Deadline | None:
        """The deadline of the download this thread has under way (:meth:`within`), if any."""
        return getattr(self._current, "deadline", None)

    @contextmanager
    def within(self, deadline: Deadline) -> Iterator[Deadline]:
        """Hold this thread's requests to ``deadline`` (enter the deadline too, for its timer)."""
        previous, self._current.deadline = self.deadline, deadline
        try:
            yield deadline
        finally:
            self._current.deadline = previous

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _guarded_pools(self.policy, lambda: self.deadline)

    def send(self, request: Any, *args: Any, proxies: Any = None, **kwargs: Any) -> Any:
        target = self.policy.check_url(request.url)
        if target is not None and select_proxy(request.url, proxies or {}):
            self.policy.check_resolved(*target)  # the proxy connects, not us: check what the name resolves to
        return super().send(request, *args, proxies=proxies, **kwargs)
