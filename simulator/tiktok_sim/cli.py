"""Run the simulator, or talk to a running one, from the command line.

``python -m tiktok_sim [serve] [--port 8765] [--host 127.0.0.1] [--seed 42] [--accounts 3]
[--videos 1000] [--client-key K] [--client-secret S] [--access-ttl 7200] [--refresh-ttl 15552000]
[--cover-ttl 21600] [--rate-limit 600] [--rate-window 60] [--rate-scope app|token] ...`` starts a
server (``--help`` lists every option).  Each option can also come from ``TIKTOK_SIM_<NAME>``
(``TIKTOK_SIM_CLIENT_SECRET`` keeps the secret off the command line); a flag wins over the
variable.  Without a client secret a random one is generated and never printed.  On start the
server prints ``tiktok-sim listening on http://HOST:PORT`` (with the real port when ``--port 0``),
the client key and the accounts' open_ids.

``python -m tiktok_sim mint-code --url http://127.0.0.1:8765 --open-id X --scopes
user.info.basic,video.list --redirect-uri https://example.com/cb [--code-challenge C]`` prints an
authorization code minted by a running simulator, as if the user had approved those scopes.

``python -m tiktok_sim accounts --url http://127.0.0.1:8765`` prints the running simulator's
accounts as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from tiktok_sim.config import ENV_PREFIX, OPTIONS, SimConfig

READY_PREFIX = "tiktok-sim listening on "
DEFAULT_URL = "http://127.0.0.1:8765"


def config_from(args: argparse.Namespace, environ: dict[str, str]) -> SimConfig:
    """Merge defaults, ``TIKTOK_SIM_*`` variables and flags into a config."""
    config = SimConfig()
    values: dict[str, Any] = {}
    for option in OPTIONS:
        flag_value = getattr(args, option.name)
        if flag_value is not None:
            values[option.name] = flag_value
        elif option.env in environ:
            values[option.name] = environ[option.env]
    config.update(values)
    return config


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tiktok_sim",
        description="Serve a simulated TikTok Display API v2. Every option can also be set with "
        f"{ENV_PREFIX}<NAME> (e.g. {ENV_PREFIX}CLIENT_SECRET). Subcommands: serve (default), "
        "mint-code, accounts.",
    )
    defaults = SimConfig()
    for option in OPTIONS:
        default = None if option.secret else getattr(defaults, option.name)
        parser.add_argument(
            option.flag,
            dest=option.name,
            default=None,
            metavar=option.name.upper(),
            help=f"{option.help} [env {option.env}; default {default}]",
        )
    return parser


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(config: SimConfig) -> None:
    """Build the population and serve it until interrupted."""
    import uvicorn

    from tiktok_sim.app import create_app
    from tiktok_sim.state import Simulator

    generated_secret = config.client_secret is None
    sim = Simulator(config)
    app = create_app(sim)
    sock = _bind(config.host, config.port)
    port = sock.getsockname()[1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"{READY_PREFIX}http://{host}:{port}", flush=True)
    print(f"client_key: {config.client_key}", flush=True)
    if generated_secret:
        print(
            f"client_secret: generated at random (not shown); set {ENV_PREFIX}CLIENT_SECRET to choose one",
            flush=True,
        )
    print(f"seed: {config.seed}", flush=True)
    for account in sim.accounts.accounts:
        print(f"account {account.profile.index}: open_id={account.open_id} videos={len(account.ids)}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=config.access_log,
            lifespan="off",
            # Longer than any idle gap in a test run, so clients never race a server-side close.
            timeout_keep_alive=65,
            timeout_graceful_shutdown=2,
        )
    )
    server.run(sockets=[sock])


def _admin_call(url: str, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        url.rstrip("/") + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise SystemExit(f"{method} {path} failed with HTTP {exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise SystemExit(f"cannot reach the simulator at {url}: {exc.reason}") from None


def mint_code(argv: Sequence[str], environ: dict[str, str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tiktok_sim mint-code", description="Mint an authorization code on a running simulator."
    )
    parser.add_argument("--url", default=environ.get(f"{ENV_PREFIX}URL", DEFAULT_URL))
    parser.add_argument("--open-id", required=True)
    parser.add_argument("--scopes", required=True, help="comma-separated, e.g. user.info.basic,video.list")
    parser.add_argument("--redirect-uri", required=True)
    parser.add_argument("--code-challenge", default=None, help="PKCE S256 challenge")
    parser.add_argument("--code-challenge-method", default="S256", choices=["S256", "plain"])
    args = parser.parse_args(argv)
    answer = _admin_call(
        args.url,
        "POST",
        "/_sim/codes",
        {
            "open_id": args.open_id,
            "scopes": args.scopes,
            "redirect_uri": args.redirect_uri,
            "code_challenge": args.code_challenge,
            "code_challenge_method": args.code_challenge_method,
        },
    )
    print(answer["code"])
    return 0


def accounts(argv: Sequence[str], environ: dict[str, str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tiktok_sim accounts", description="List accounts.")
    parser.add_argument("--url", default=environ.get(f"{ENV_PREFIX}URL", DEFAULT_URL))
    args = parser.parse_args(argv)
    print(json.dumps(_admin_call(args.url, "GET", "/_sim/accounts")["accounts"], indent=2, ensure_ascii=False))
    return 0


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    """Dispatch ``serve`` (the default), ``mint-code`` or ``accounts``."""
    args = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ if environ is None else environ)
    if args and args[0] == "mint-code":
        return mint_code(args[1:], env)
    if args and args[0] == "accounts":
        return accounts(args[1:], env)
    if args and args[0] == "serve":
        args = args[1:]
    parser = serve_parser()
    namespace = parser.parse_args(args)
    try:
        config = config_from(namespace, env)
    except ValueError as exc:
        parser.error(str(exc))
    serve(config)
    return 0
