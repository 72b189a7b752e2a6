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
from urllib.parse import parse_qs, urlsplit

import pytest

from tiktok_pipeline.archive import ArchiveSettings, CoverArchiver, CoverItem
from tiktok_pipeline.egress import HostPolicy
from tiktok_sim.covers import image
from tiktok_warehouse.tokens import TokenGrant, TokenStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
JPEG = image("cover", "egress", 1)
SIGNED = "?x-expires=1767225600&x-signature=0123456789abcdef"


class Server:
    """A plain HTTP server on a loopback port: ``/cover.jpeg`` is a JPEG, ``/hop?to=URL`` a 302 to URL."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.paths.append(urlsplit(self.path).path)
                target = parse_qs(urlsplit(self.path).query).get("to")
                if target:
                    self.send_response(302)
                    self.send_header("Location", target[0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(JPEG)))
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
    private = kwargs.pop("private", frozenset())
    settings = ArchiveSettings(base=f"file://{tmp_path}", pace_seconds=0, workers=1, retries=0, private_hosts=private)
    return CoverArchiver(engine, settings, **kwargs).archive([CoverItem("cover", "7001", account, url)], now=T0)


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
