"""Real local receivers for what the project sends out: an HTTP webhook, an SMTP server, StatsD (UDP)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def http_receiver(status: int = 200, on_post: Callable[[int], None] | None = None) -> Iterator[Any]:
    """An HTTP server on a free port that records every POST: ``.url``, ``.requests`` [(path, headers, body)].

    :param on_post: called with how many POSTs have come, this one included, before it is answered
        (in the server's thread for that request: it may hold the answer back).
    """
    received: list[tuple[str, dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append((self.path, dict(self.headers), body))
            if on_post is not None:
                on_post(len(received))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.requests = received
    server.json = lambda: [json.loads(body) for _, _, body in received]
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def smtp_receiver() -> Iterator[Any]:
    """An aiosmtpd server on a free port: ``.port``, ``.messages`` [(mail_from, rcpt_tos, raw bytes)]."""
    from aiosmtpd.controller import Controller

    class Handler:
        def __init__(self) -> None:
            self.messages: list[tuple[str, list[str], bytes]] = []

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            return "250 OK"

    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    controller.messages = handler.messages
    try:
        yield controller
    finally:
        controller.stop()


@contextmanager
def udp_receiver() -> Iterator[Any]:
    """A UDP socket on a free port; ``.port`` and ``.datagrams(timeout)`` -> list of str."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    class Receiver:
        port = sock.getsockname()[1]

        @staticmethod
        def datagrams(timeout: float = 2.0) -> list[str]:
            got: list[str] = []
            sock.settimeout(timeout)
            try:
                while True:
                    data, _ = sock.recvfrom(65535)
                    got.extend(data.decode().splitlines())
                    sock.settimeout(0.3)
            except TimeoutError:
                return got

    try:
        yield Receiver()
    finally:
        sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
