"""Hostile cover servers, for real: a raw TCP server on 127.0.0.1 answering each path with the bytes
(and the pauses) a hostile CDN would send -- dripped headers, slow redirect chains, endless interim
answers, malformed framing, control characters -- and the archive over real sockets against it.

The deadline tests measure wall time with a generous margin (the deadline + 4 s): each hostile
server here would hold the old archive for 6 s or more, most of them until the server gives up.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tiktok_pipeline.archive import ArchiveSettings, CoverArchiver, CoverItem
from tiktok_sim.covers import image
from tiktok_warehouse.tokens import TokenGrant, TokenStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
JPEG = image("cover", "hostile", 1)
#: How long a dripping answer goes on before the server gives up (so the old code's hang ends).
GIVE_UP = 12.0
#: The deadline the tests set, and the margin the whole run may take past it.
DEADLINE = 2.0
MARGIN = 4.0


def ok(body: bytes = JPEG, *, head: str = "Content-Type: image/jpeg\r\n") -> bytes:
    """A complete 200 answer closing its connection (``head``: header lines; Content-Length added unless given)."""
    if "content-length" not in head.lower():
        head += f"Content-Length: {len(body)}\r\n"
    return f"HTTP/1.1 200 OK\r\n{head}Connection: close\r\n\r\n".encode("latin-1") + body


class Answer:
    """One connection of the hostile server: what a route writes, and when."""

    def __init__(self, sock: socket.socket, stopped: threading.Event) -> None:
        self.sock, self.stopped, self.started = sock, stopped, time.monotonic()

    def going(self) -> bool:
        return not self.stopped.is_set() and time.monotonic() - self.started < GIVE_UP

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait(self, seconds: float) -> None:
        self.stopped.wait(seconds)

    def drip(self, data: bytes, every: float) -> None:
        """Send ``data`` one byte every ``every`` seconds (until the server gives up)."""
        for i in range(len(data)):
            if not self.going():
                return
            self.send(data[i : i + 1])
            self.wait(every)


Route = Callable[[Answer], None]


class Hostile:
    """A raw HTTP/1.1 server on a loopback port: ``routes`` maps a path to what is written back.

    ``hits`` counts the requests of each path (so a retry shows); ``raw``, when set, is called for
    every connection without reading a request (for a TLS handshake that never ends).
    """

    def __init__(self, routes: dict[str, Route] | None = None, *, raw: Route | None = None) -> None:
        self.routes = {"/cover.jpeg": lambda a: a.send(ok()), **(routes or {})}
        self.raw = raw
        self.hits: Counter[str] = Counter()
        self.stopped = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        answer = Answer(sock, self.stopped)
        try:
            if self.raw is not None:
                self.raw(answer)
                return
            sock.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                data = sock.recv(65536)
                if not data:
                    return
                request += data
            path = request.split(b" ", 2)[1].decode("latin-1").split("?")[0]
            self.hits[path] += 1
            self.routes[path](answer)
        except OSError:
            pass
        finally:
            sock.close()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


@pytest.fixture
def hostile() -> Iterator[Callable[..., Hostile]]:
    started: list[Hostile] = []

    def start(routes: dict[str, Route] | None = None, **kwargs: Any) -> Hostile:
        server = Hostile(routes, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def account(clean_warehouse: Any, encryption_key: str) -> str:
    open_id = f"hostile-{uuid.uuid4().hex[:8]}"
    TokenStore(clean_warehouse, encryption_key).save_grant(
        TokenGrant(open_id, "act.x", 7200, "rft.x", 86400, frozenset({"video.list"}), datetime.now(UTC))
    )
    return open_id


def run(engine: Any, tmp_path: Path, account: str, urls: list[str], **settings: Any) -> Any:
    """Archive the covers of videos 7001, 7002 ... from ``urls`` (hosts on 127.0.0.1 allowed), in one run."""
    sleep = settings.pop("sleep", time.sleep)
    values: dict[str, Any] = {"pace_seconds": 0, "workers": 1, "private_hosts": frozenset({"127.0.0.1"})}
    settings = ArchiveSettings(base=f"file://{tmp_path}", **{**values, **settings})
    items = [CoverItem("cover", str(7001 + i), account, url) for i, url in enumerate(urls)]
    return CoverArchiver(engine, settings, sleep=sleep).archive(items, now=T0)


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


# -- 1. the deadline bounds the whole download ---------------------------------------------------


def drip_headers(answer: Answer) -> None:
    # Each byte well inside the read timeout (20 s): only a deadline on the whole download ends it.
    answer.drip(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n" + b"X-Pad: 0\r\n" * 1000, every=0.2)


def interim_flood(answer: Answer) -> None:
    # "100 Continue" after "100 Continue": http.client reads on, each arriving well inside the read timeout.
    while answer.going():
        answer.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        answer.wait(0.05)


def slow_hop(n: int) -> Route:
    def route(answer: Answer) -> None:
        answer.wait(1.5)  # each hop alone well inside the read timeout and the deadline
        if n < 3:
            answer.send(f"HTTP/1.1 302 Found\r\nLocation: /hop{n + 1}\r\nContent-Length: 0\r\n\r\n".encode())
        else:
            answer.send(ok())

    return route


@pytest.mark.parametrize(
    ("routes", "path"),
    [
        ({"/drip": drip_headers}, "/drip"),
        ({"/flood": interim_flood}, "/flood"),
        ({f"/hop{n}": slow_hop(n) for n in range(4)}, "/hop0"),
    ],
    ids=["dripped-headers", "endless-100-continue", "slow-redirect-chain"],
)
def test_a_slow_answer_is_cut_at_the_deadline_and_the_other_covers_go_on(
    clean_warehouse: Any,
    tmp_path: Path,
    account: str,
    hostile: Callable[..., Hostile],
    caplog: pytest.LogCaptureFixture,
    routes: dict[str, Route],
    path: str,
) -> None:
    server = hostile(routes)
    with caplog.at_level(logging.WARNING, logger="tiktok_pipeline.archive"):
        result, elapsed = timed(
            lambda: run(
                clean_warehouse,
                tmp_path,
                account,
                [server.url(path), server.url("/cover.jpeg")],
                deadline_seconds=DEADLINE,
            )
        )
    assert elapsed < DEADLINE + MARGIN, f"the run took {elapsed:.1f} s, past the {DEADLINE:g} s deadline"
    [(subject, why)] = result.failed
    assert subject == "7001" and why.startswith(f"slower than {DEADLINE:g} s"), why
    assert (result.refused, result.new_versions) == ([], 1)  # the next cover was archived
    # A failure (the next run tries again), not retried in this run: the deadline bounds every try.
    assert "Could not download the cover of 7001 after 1 try: slower than" in caplog.text


def test_the_deadline_bounds_the_retries_too(
    clean_warehouse: Any, tmp_path: Path, account: str, hostile: Callable[..., Hostile]
) -> None:
    # Each try answers a 503 after 0.8 s: three tries and their backoff took 3.9 s, past the 2 s.
    def slow_503(answer: Answer) -> None:
        answer.wait(0.8)
        answer.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")

    server = hostile({"/busy": slow_503})
    result, elapsed = timed(
        lambda: run(clean_warehouse, tmp_path, account, [server.url("/busy")], deadline_seconds=DEADLINE, retries=2)
    )
    assert elapsed < DEADLINE + MARGIN
    [(_, why)] = result.failed
    assert why.startswith(f"slower than {DEADLINE:g} s"), why
    assert server.hits["/busy"] == 2  # the first try, and the retry the deadline cut


def full_listener(host: str = "127.0.0.1", port: int = 0) -> tuple[socket.socket, list[socket.socket]]:
    """A listener whose backlog is full: a new connection to it hangs in its handshake."""
    listener = socket.socket()
    listener.bind((host, port))
    listener.listen(0)
    held = []
    for _ in range(3):
        waiting = socket.socket()
        waiting.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            waiting.connect(listener.getsockname())
        held.append(waiting)
    time.sleep(0.2)
    return listener, held


def test_a_connect_that_hangs_is_cut_at_the_deadline(clean_warehouse: Any, tmp_path: Path, account: str) -> None:
    # The connect timeout (5 s) bounds one try; three tries of it (and their backoff) took 16.5 s.
    listener, held = full_listener()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/cover.jpeg"
        result, elapsed = timed(lambda: run(clean_warehouse, tmp_path, account, [url], deadline_seconds=DEADLINE))
    finally:
        for sock in (listener, *held):
            sock.close()
    assert elapsed < DEADLINE + MARGIN
    [(_, why)] = result.failed
    assert why.startswith(f"slower than {DEADLINE:g} s"), why


def test_every_address_of_a_name_shares_the_deadline(
    clean_warehouse: Any, tmp_path: Path, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name with many addresses, each hanging: one connect timeout each would add up. The resolver
    # is the one thing faked (no DNS server here): "many.test" has two loopback addresses.
    first, held_first = full_listener()
    port = first.getsockname()[1]
    second, held_second = full_listener("127.0.0.2", port)
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "many.test":
            return [*real("127.0.0.1", *args, **kwargs), *real("127.0.0.2", *args, **kwargs)]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    try:
        url = f"http://many.test:{port}/cover.jpeg"
        result, elapsed = timed(
            lambda: run(
                clean_warehouse,
                tmp_path,
                account,
                [url],
                deadline_seconds=DEADLINE + 2,  # each address gets its own connect timeout
                timeout=(3.0, 20.0),
                retries=0,
                private_hosts=frozenset({"many.test"}),
            )
        )
    finally:
        for sock in (first, second, *held_first, *held_second):
            sock.close()
    assert elapsed < DEADLINE + 2 + 1.5, f"{elapsed:.1f} s: the second address got a connect timeout of its own"
    [(_, why)] = result.failed
    assert why.startswith(f"slower than {DEADLINE + 2:g} s"), why


def test_a_tls_handshake_that_drips_is_cut_at_the_deadline(
    clean_warehouse: Any, tmp_path: Path, account: str, hostile: Callable[..., Hostile]
) -> None:
    # No certificate needed: the server answers the ClientHello one byte at a time, and never finishes.
    def drip_handshake(answer: Answer) -> None:
        answer.sock.recv(65536)
        answer.drip(b"\x16\x03\x03\x40\x00" + b"\x02" * 16384, every=0.2)

    server = hostile(raw=drip_handshake)
    result, elapsed = timed(
        lambda: run(clean_warehouse, tmp_path, account, [server.url("/cover.jpeg", "https")], deadline_seconds=DEADLINE)
    )
    assert elapsed < DEADLINE + MARGIN
    [(_, why)] = result.failed
    assert why.startswith(f"slower than {DEADLINE:g} s"), why


# -- 2. malformed framing is refused, not retried ----------------------------------------------


@pytest.mark.parametrize(
    "length",
    [
        b"1\r\nContent-Length: 2",  # two headers: "1, 2"
        b"1, 2",
        f"{len(JPEG)}, {len(JPEG)}".encode(),  # a list, even of one value
        b"+12",  # int() takes it: the old code stored a 12-byte "JPEG"
        b"1_2",
        "\u0661\u0662".encode(),  # Arabic-Indic digits, as UTF-8 bytes
        "\u00b9".encode("latin-1"),  # a superscript one: str.isdigit() says yes
        b"-1",
        b"",
    ],
    ids=["two-headers", "list", "same-list", "plus", "underscore", "arabic", "superscript", "negative", "empty"],
)
def test_a_content_length_that_is_not_plain_digits_is_refused_not_retried(
    clean_warehouse: Any, tmp_path: Path, account: str, hostile: Callable[..., Hostile], length: bytes
) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: " + length + b"\r\n\r\n" + JPEG
    server = hostile({"/odd": lambda a: a.send(answer)})
    sleeps: list[float] = []
    result = run(
        clean_warehouse, tmp_path, account, [server.url("/odd"), server.url("/cover.jpeg")], sleep=sleeps.append
    )
    assert [subject for subject, _ in result.refused] == ["7001"], result
    assert result.refused[0][1].startswith("malformed answer (Content-Length"), result.refused
    assert result.refused[0][1].isprintable()
    assert (server.hits["/odd"], sleeps, result.failed, result.new_versions) == (1, [], [], 1)


def test_a_content_length_too_long_for_int_is_refused_and_the_run_goes_on(
    clean_warehouse: Any, tmp_path: Path, account: str, hostile: Callable[..., Hostile]
) -> None:
    # 5,000 digits: int() refuses a number that long (ValueError), which aborted the whole run.
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n" + JPEG
    server = hostile({"/huge": lambda a: a.send(answer)})
    result = run(clean_warehouse, tmp_path, account, [server.url("/huge"), server.url("/cover.jpeg")])
    [(subject, why)] = result.refused
    assert subject == "7001" and why.startswith("larger than 5242880 bytes (Content-Length 9999"), why
    assert len(why) < 300
    assert (result.failed, result.new_versions) == ([], 1)


def test_the_cap_is_still_enforced_on_the_bytes_when_the_length_is_plain(
    clean_warehouse: Any, tmp_path: Path, account: str, hostile: Callable[..., Hostile]
) -> None:
    # Chunked, no Content-Length at all: the bytes read are what is capped.
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(JPEG), JPEG) for _ in range(4)) + b"0\r\n\r\n"
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    server = hostile({"/big": lambda a: a.send(answer)})
    result = run(clean_warehouse, tmp_path, account, [server.url("/big")], max_bytes=len(JPEG) * 3)
    assert result.refused == [("7001", f"larger than {len(JPEG) * 3} bytes")]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 150 + b"\r\n", "malformed answer (more than 100 header lines)"),
        (b"HTTP/1.1 200 OK\r\nX-A: " + b"b" * 70000 + b"\r\n\r\n", "malformed answer (a header line over 64 KiB)"),
        (b"HTXP/1.1 200 OK\r\n\r\n", "malformed answer (no HTTP status line)"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "malformed answer (no HTTP status line)"),
    ],
    ids=["many-headers", "long-header-line", "bad-status-line", "bad-status-code"],
)
def test_a_malformed_head_is_refused_not_retried(
    clean_warehouse: Any, tmp_path: Path, account: str, hostile: Callable[..., Hostile], answer: bytes, why: str
) -> None:
    server = hostile({"/odd": lambda a: a.send(answer)})
    sleeps: list[float] = []
    result = run(
        clean_warehouse, tmp_path, account, [server.url("/odd"), server.url("/cover.jpeg")], sleep=sleeps.append
    )
    assert result.refused == [("7001", why)]
    assert (server.hits["/odd"], sleeps, result.failed, result.new_versions) == (1, [], [], 1)


@pytest.mark.parametrize(
    "route",
    [
        lambda a: None,  # the connection closed before any answer
        lambda a: a.send(ok()[:200]),  # the body cut short of its Content-Length
    ],
    ids=["closed-without-answer", "body-cut-short"],
)
def test_a_cut_connection_is_still_retried(
    clean_warehouse: Any, tmp_path: Path, account: str, hostile: Callable[..., Hostile], route: Route
) -> None:
    # The framing checks above must not turn a transient network failure into a refusal.
    server = hostile({"/cut": route})
    sleeps: list[float] = []
    result = run(clean_warehouse, tmp_path, account, [server.url("/cut")], sleep=sleeps.append, retries=2)
    assert (server.hits["/cut"], sleeps, result.refused) == (3, [0.5, 1.0], [])
    assert len(result.failed) == 1


# -- 3. and 4. server text in a reason or a log line is printable and bounded --------------------

CONTROL = "\x1b\x07\x08\x7f\x9b\x85"  # escape, bell, backspace, delete, CSI, next line


def assert_clean(text: str) -> None:
    assert all(c.isprintable() or c == "\n" for c in text), repr(text)
    assert not any(c in text for c in CONTROL)


def test_a_refused_content_type_reaches_the_log_printable_and_bounded(
    clean_warehouse: Any,
    tmp_path: Path,
    account: str,
    hostile: Callable[..., Hostile],
    caplog: pytest.LogCaptureFixture,
) -> None:
    content_type = f"text/html\x1b[31m{CONTROL}" + "a" * 5000
    answer = ok(head=f"Content-Type: {content_type}\r\n")
    server = hostile({"/odd": lambda a: a.send(answer)})
    with caplog.at_level(logging.WARNING, logger="tiktok_pipeline.archive"):
        result = run(clean_warehouse, tmp_path, account, [server.url("/odd")])
    [(_, why)] = result.refused
    assert why.startswith("not an image (Content-Type text/html\\x1b[31m\\x1b\\x07\\x08\\x7f\\x9b\\x85aaa"), why
    assert len(why) < 300
    assert_clean(why)
    assert_clean(caplog.text)
    assert "Not archiving the cover of 7001: not an image (Content-Type text/html\\x1b" in caplog.text


@pytest.mark.parametrize(
    ("location", "why"),
    [
        # A host with control characters never gets this far (requests refuses to parse it), nor
        # a Location that is no UTF-8 (\x9b, \x85); the user part of the link with ASCII ones does,
        # percent-encoded for the request but not in the netloc.
        (f"http://us{CONTROL[:4]}er@evil.example/x", "redirect to another host (us\\x1b\\x07\\x08\\x7fer@evil"),
        ("http://" + "a" * 3000 + ".example/x", "redirect to another host (aaaaaaaaaa"),
        ("http://[fe80::1%25" + "a" * 3000 + "]/x", "host fe80::1%25aaaaaaaaaa"),  # a zone id of any length
    ],
    ids=["control-characters", "long-host", "long-zone-id"],
)
def test_a_refused_redirect_reaches_the_log_printable_and_bounded(
    clean_warehouse: Any,
    tmp_path: Path,
    account: str,
    hostile: Callable[..., Hostile],
    caplog: pytest.LogCaptureFixture,
    location: str,
    why: str,
) -> None:
    answer = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode("latin-1")
    server = hostile({"/hop": lambda a: a.send(answer)})
    with caplog.at_level(logging.WARNING, logger="tiktok_pipeline.archive"):
        result = run(clean_warehouse, tmp_path, account, [server.url("/hop")])
    [(_, reason)] = result.refused
    assert reason.startswith(why), reason
    assert len(reason) < 300
    assert_clean(reason)
    assert_clean(caplog.text)


def test_an_etag_too_long_to_send_back_is_not_kept(
    clean_warehouse: Any, tmp_path: Path, account: str, hostile: Callable[..., Hostile]
) -> None:
    # It would be sent back in If-None-Match on every run; a validator that long is not one we need.
    long_tag, short_tag = '"' + "a" * 600 + '"', '"v1"'
    server = hostile(
        {
            "/long": lambda a: a.send(ok(head=f"Content-Type: image/jpeg\r\nETag: {long_tag}\r\n")),
            "/short": lambda a: a.send(
                ok(image("cover", "hostile", 2), head=f"Content-Type: image/jpeg\r\nETag: {short_tag}\r\n")
            ),
        }
    )
    result = run(clean_warehouse, tmp_path, account, [server.url("/long"), server.url("/short")])
    assert (result.new_versions, result.refused, result.failed) == (2, [], [])
    with clean_warehouse.connect() as conn:
        etags = dict(conn.execute(text("SELECT subject_id, etag FROM tiktok.cover_archive")).all())
    assert etags == {"7001": None, "7002": short_tag}


def test_a_refused_scheme_is_bounded(clean_warehouse: Any, tmp_path: Path, account: str) -> None:
    result = run(clean_warehouse, tmp_path, account, ["a" * 5000 + "://cdn.example/cover.jpeg"])
    [(_, why)] = result.refused
    assert why.startswith("not an http(s) link (aaaa") and len(why) < 300, why


@pytest.mark.parametrize("retry_after", ["99999999999", "1e308", "nan", "-1", "Wed, 21 Oct 2999 07:28:00 GMT"])
def test_a_hostile_retry_after_is_not_honoured(
    clean_warehouse: Any, tmp_path: Path, account: str, hostile: Callable[..., Hostile], retry_after: str
) -> None:
    # Found nothing, kept as a regression net: the archive backs off on its own schedule (neither
    # requests nor urllib3 sleeps on a Retry-After here), so a CDN cannot park a worker.
    answer = f"HTTP/1.1 503 Slow Down\r\nRetry-After: {retry_after}\r\nContent-Length: 0\r\n\r\n".encode()
    server = hostile({"/busy": lambda a: a.send(answer)})
    sleeps: list[float] = []
    result, elapsed = timed(
        lambda: run(clean_warehouse, tmp_path, account, [server.url("/busy")], sleep=sleeps.append, retries=2)
    )
    assert (result.failed, sleeps, server.hits["/busy"]) == ([("7001", "HTTP 503")], [0.5, 1.0], 3)
    assert elapsed < MARGIN
