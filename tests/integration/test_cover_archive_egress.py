"""Cover links to non-public addresses, for real: an HTTP server on 127.0.0.1 serving a real JPEG,
the archive refusing it unless it is the API host or listed, redirects included, over real sockets."""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from sqlalchemy import text

from tiktok_pipeline.archive import ArchiveSettings, CoverArchiver, CoverItem
from tiktok_pipeline.egress import HostPolicy
from tiktok_sim.covers import image
from tiktok_warehouse.tokens import TokenGrant, TokenStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
JPEG = image("cover", "egress", 1)
SIGNED = "?x-expires=1767225600&x-signature=0123456789abcdef"


class Server:
    """A plain HTTP server on a loopback port: ``/cover.jpeg`` is a JPEG, ``/hop?to=URL`` a 302 to URL.

    ``?length=`` sends that ``Content-Length`` instead of the true one, ``?etag=`` an ``ETag``.
    ``keep_alive``: HTTP/1.1, a connection serving as many requests as the client sends on it
    (``clients``: the client port of each request).
    """

    def __init__(self, *, keep_alive: bool = False) -> None:
        self.paths: list[str] = []
        self.clients: list[int] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def do_GET(self) -> None:
                server.paths.append(urlsplit(self.path).path)
                server.clients.append(self.client_address[1])
                query = parse_qs(urlsplit(self.path).query)
                target = query.get("to")
                if target:
                    self.send_response(302)
                    self.send_header("Location", target[0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", query.get("length", [str(len(JPEG))])[0])
                if "etag" in query:
                    self.send_header("ETag", query["etag"][0])
                self.end_headers()
                self.wfile.write(JPEG)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, host: str, path: str = "/cover.jpeg", query: str = SIGNED) -> str:
        return f"http://{host}:{self.port}{path}{query}"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server()
    running.thread.start()
    try:
        yield running
    finally:
        running.httpd.shutdown()
        running.httpd.server_close()


@pytest.fixture
def account(clean_warehouse: Any, encryption_key: str, server: Server) -> str:
    open_id = f"egress-{uuid.uuid4().hex[:8]}"
    TokenStore(clean_warehouse, encryption_key).save_grant(
        TokenGrant(open_id, "act.x", 7200, "rft.x", 86400, frozenset({"video.list"}), datetime.now(UTC))
    )
    server.paths.clear()
    return open_id


def archive_one(engine: Any, tmp_path: Path, account: str, url: str, **kwargs: Any) -> Any:
    """Archive one cover from ``url`` (``private``: listed hosts; ``api_url``: the API's)."""
    return archive_many(engine, tmp_path, account, [url], **kwargs)


def archive_many(engine: Any, tmp_path: Path, account: str, urls: list[str], **kwargs: Any) -> Any:
    """Archive the covers of videos 7001, 7002 ... from ``urls``, in one run."""
    private = kwargs.pop("private", frozenset())
    settings = ArchiveSettings(base=f"file://{tmp_path}", pace_seconds=0, workers=1, retries=0, private_hosts=private)
    items = [CoverItem("cover", str(7001 + i), account, url) for i, url in enumerate(urls)]
    return CoverArchiver(engine, settings, **kwargs).archive(items, now=T0)


def test_a_loopback_cover_is_refused_unless_it_is_the_api_host(
    clean_warehouse: Any, tmp_path: Path, account: str, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tiktok_pipeline.archive"):
        refused = archive_one(clean_warehouse, tmp_path, account, server.url("127.0.0.1"))
    assert refused.refused == [
        (
            "7001",
            "host 127.0.0.1 is not a public address (loopback); if the host is yours, list it in "
            "[tiktok] cover_archive_private_hosts",
        )
    ]
    assert (refused.downloaded, refused.new_versions, refused.failed) == (0, 0, [])
    assert server.paths == []  # refused before a connection
    assert "Not archiving the cover of 7001: host 127.0.0.1 is not a public address (loopback)" in caplog.text
    assert f"(account {account})" in caplog.text
    assert "x-signature" not in caplog.text and "cover.jpeg" not in caplog.text

    # The API host on another port does not open the rest of the machine (Postgres, Redis ...).
    elsewhere = archive_one(clean_warehouse, tmp_path, account, server.url("127.0.0.1"), api_url="http://127.0.0.1:1")
    assert len(elsewhere.refused) == 1 and server.paths == []

    # The TikTok connection's own host and port (the simulator serves its covers itself): archived.
    allowed = archive_one(
        clean_warehouse, tmp_path, account, server.url("127.0.0.1"), api_url=f"http://127.0.0.1:{server.port}"
    )
    assert (allowed.downloaded, allowed.new_versions, allowed.refused) == (1, 1, [])
    assert server.paths == ["/cover.jpeg"]


def test_a_name_is_judged_by_the_address_it_connects_to(
    clean_warehouse: Any, tmp_path: Path, account: str, server: Server
) -> None:
    # No address is looked up beforehand: the connected socket's peer is checked, before any byte
    # of the request is sent -- so a name answering one address when asked and another on connect
    # (DNS rebinding) gains nothing.
    refused = archive_one(clean_warehouse, tmp_path, account, server.url("localhost"))
    [(subject, why)] = refused.refused
    assert subject == "7001"
    assert why.startswith("host localhost resolved to 127.0.0.1, not a public address (loopback)") or why.startswith(
        "host localhost resolved to ::1, not a public address (loopback)"
    )
    assert server.paths == []

    listed = archive_one(
        clean_warehouse, tmp_path, account, server.url("localhost"), private=frozenset({f"localhost:{server.port}"})
    )
    assert (listed.new_versions, listed.refused) == (1, [])
    assert server.paths == ["/cover.jpeg"]


SPELLINGS = ["2130706433", "0x7f.1", "0177.0.0.1", "127.1", "[::ffff:127.0.0.1]", "0"]


@pytest.mark.parametrize("host", SPELLINGS)
def test_every_spelling_of_a_loopback_address_is_refused(
    clean_warehouse: Any, tmp_path: Path, account: str, server: Server, host: str
) -> None:
    result = archive_one(clean_warehouse, tmp_path, account, server.url(host))
    [(_, why)] = result.refused
    assert why.startswith(f"host {host.strip('[]')} is ") and "not a public address" in why
    assert "loopback" in why or "unspecified" in why
    assert server.paths == [] and result.failed == []


@pytest.mark.parametrize("host", [*SPELLINGS, "localhost"])
def test_the_connected_address_is_checked_even_past_the_literal_check(
    clean_warehouse: Any,
    tmp_path: Path,
    account: str,
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    host: str,
) -> None:
    # Without the early check of literals, each spelling still reaches the socket's peer check:
    # whatever the resolver made of the host, the address connected to is what is judged.
    monkeypatch.setattr(HostPolicy, "check_literal", lambda self, host, port: None)
    result = archive_one(clean_warehouse, tmp_path, account, server.url(host))
    [(_, why)] = result.refused
    assert re.match(rf"host {re.escape(host.strip('[]'))} resolved to (127\.0\.0\.1|::1|::ffff:7f00:1), ", why), why
    assert server.paths == [] and result.failed == []


def test_a_redirect_from_an_allowed_host_to_a_private_one_is_refused(
    clean_warehouse: Any, tmp_path: Path, account: str, server: Server
) -> None:
    # localhost:<port> is allowed (listed); it redirects to the same server as 127.0.0.1, which is not.
    hop = server.url("localhost", "/hop", f"?to={server.url('127.0.0.1')}")
    allowed = frozenset({f"localhost:{server.port}"})
    result = archive_one(clean_warehouse, tmp_path, account, hop, private=allowed)
    [(_, why)] = result.refused
    assert why.startswith("host 127.0.0.1 is not a public address (loopback)")
    assert server.paths == ["/hop"]  # the redirect was never followed

    # ... and a redirect within the allowed host is followed as before.
    server.paths.clear()
    within = server.url("localhost", "/hop", f"?to={server.url('localhost')}")
    followed = archive_one(clean_warehouse, tmp_path, account, within, private=allowed)
    assert (followed.new_versions, followed.refused) == (1, [])
    assert server.paths == ["/hop", "/cover.jpeg"]


@pytest.mark.parametrize(
    ("link", "why"),
    [
        ("http://[::1/cover.jpeg", "not a valid link"),  # an unclosed bracket: urlsplit raises
        ("http://[cdn.example]/cover.jpeg", "not a valid link"),  # no address between the brackets
        ("http:///cover.jpeg", "not a valid link"),  # no host: refused, not retried as a network error
        (None, "redirect to an invalid link"),  # the allowed host redirects to http://[::1/...
    ],
)
def test_a_malformed_link_is_refused_and_the_other_covers_go_on(
    clean_warehouse: Any, tmp_path: Path, account: str, server: Server, link: str | None, why: str
) -> None:
    # A hostile answer's link (or its redirect) that the URL parser rejects is that cover's
    # refusal: it must not abort the run and leave every other cover of the account unarchived.
    link = link or server.url("127.0.0.1", "/hop", f"?to={quote('http://[::1/cover.jpeg', safe='')}")
    api_url = f"http://127.0.0.1:{server.port}"
    result = archive_many(clean_warehouse, tmp_path, account, [link, server.url("127.0.0.1")], api_url=api_url)
    assert result.refused == [("7001", why)]
    assert (result.checked, result.new_versions, result.failed) == (2, 1, [])


@pytest.mark.parametrize("length", ["\u00b9", "\u00b2\u00b3"])  # superscript digits: isdigit(), not int()
def test_a_content_length_of_other_digits_does_not_abort_the_run(
    clean_warehouse: Any, tmp_path: Path, account: str, server: Server, length: str
) -> None:
    # The header that is no plain number is a malformed answer: that cover's refusal, the others go on.
    bad = server.url("127.0.0.1", query=f"?length={quote(length)}")
    result = archive_many(
        clean_warehouse,
        tmp_path,
        account,
        [bad, server.url("127.0.0.1", query="?v=2")],
        api_url=f"http://127.0.0.1:{server.port}",
    )
    assert result.refused == [("7001", f"malformed answer (Content-Length {length})")]
    assert (result.checked, result.failed, result.downloaded) == (2, [], 1)


def test_an_etag_postgres_cannot_store_is_not_kept(
    clean_warehouse: Any, tmp_path: Path, account: str, server: Server
) -> None:
    # A NUL in the ETag would make the INSERT fail, and with it the rest of the run.
    bad = server.url("127.0.0.1", query=f"?etag={quote(chr(34) + 'a' + chr(0) + 'b' + chr(34))}")
    good = server.url("127.0.0.1", query=f"?etag={quote(chr(34) + 'v1' + chr(34))}")
    result = archive_many(clean_warehouse, tmp_path, account, [bad, good], api_url=f"http://127.0.0.1:{server.port}")
    assert (result.checked, result.downloaded, result.refused, result.failed) == (2, 2, [], [])
    with clean_warehouse.connect() as conn:
        etags = dict(conn.execute(text("SELECT subject_id, etag FROM tiktok.cover_archive ORDER BY subject_id")).all())
    assert etags == {"7001": None, "7002": '"v1"'}


def test_a_kept_alive_connection_to_an_allowed_host_serves_no_other(
    clean_warehouse: Any, tmp_path: Path, account: str
) -> None:
    # Found nothing, kept as a regression net: connections are pooled by scheme, host and port, so
    # the one opened to the API host 127.0.0.1 is reused for it only; localhost -- the same
    # server, by a name not allowed -- gets a connection of its own, checked on connect: refused.
    kept = Server(keep_alive=True)
    kept.thread.start()
    try:
        urls = [kept.url("127.0.0.1"), kept.url("127.0.0.1", query="?v=2"), kept.url("localhost")]
        result = archive_many(clean_warehouse, tmp_path, account, urls, api_url=f"http://127.0.0.1:{kept.port}")
    finally:
        kept.httpd.shutdown()
        kept.httpd.server_close()
    assert [subject for subject, _ in result.refused] == ["7003"]
    assert re.match(r"host localhost resolved to (127\.0\.0\.1|::1), not a public", result.refused[0][1])
    assert (result.downloaded, result.failed) == (2, [])
    assert kept.paths == ["/cover.jpeg", "/cover.jpeg"] and len(set(kept.clients)) == 1  # one connection, reused
