"""One Airflow stack for the accounts UI's tests, started as `make up` starts it, on a port in 8090-8099.

It has databases, an AIRFLOW_HOME and ports of its own (the simulator's and the log servers' are
free ports), three UI users (``admin``, ``user``: may trigger DAGs, ``viewer``: read-only), and
``[tiktok_accounts] public_base_url`` set, so the OAuth redirect_uri is the configured one. It is
started once for this folder (package scope; under pytest-xdist the folder's files all go to one
worker, see ``pytest_xdist_make_scheduler`` in tests/conftest.py), and stopped after the folder's
last test with ``python -m tiktok_tools.up stop``, its databases dropped, even when tests fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from stack_support import drop_databases, free_port, run_module, stack_env

from tiktok_ops.settings import ROOT, Settings
from tiktok_sim.testing import SimulatorAdmin
from tiktok_tools import up

SETTINGS = Settings.from_env()
UI_PORTS = range(8090, 8100)
USERS = "admin:admin,user:user,viewer:viewer"
CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


def _ui_port() -> int:
    """The first free port of this session's share of 8090-8099.

    Each pytest-xdist worker (``gw<i>`` of ``PYTEST_XDIST_WORKER_COUNT``) takes every n-th port
    from 8090 + i: two workers starting their stacks at once never pick the same port.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index, count = int(worker.removeprefix("gw") or 0), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    for port in UI_PORTS[index::count]:
        if not up._port_in_use("127.0.0.1", port):
            return port
    raise RuntimeError(f"no free port in 8090-8099 (every {count}th from {8090 + index}) for the accounts UI stack")


@dataclass
class AccountsStack:
    """A running stack: where its UI, simulator and warehouse are, and how to act as each user."""

    url: str
    sim_url: str
    home: Path
    warehouse_url: str
    env: dict[str, str]
    _tokens: dict[str, str] = field(default_factory=dict, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def app(self) -> str:
        return f"{self.url}/tiktok-accounts"

    @property
    def callback(self) -> str:
        return f"{self.app}/callback"

    def password(self, user: str) -> str:
        return json.loads((self.home / up.PASSWORDS_FILE).read_text())[user]

    def token(self, user: str = "admin") -> str:
        if user not in self._tokens:
            self._tokens[user] = up.api_token(self.url, user, self.password(user))
        return self._tokens[user]

    def browser(self, user: str = "admin") -> requests.Session:
        """A session that carries the UI's JWT cookie, as a logged-in browser does."""
        session = requests.Session()
        session.cookies.set("_token", self.token(user), domain="127.0.0.1", path="/")
        session.headers["Accept"] = "text/html"
        return session

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = requests.request(
            method, f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token()}"}, timeout=30, **kwargs
        )
        answer.raise_for_status()
        return answer.json() if answer.content else None

    @property
    def sim(self) -> SimulatorAdmin:
        return SimulatorAdmin(self.sim_url)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.warehouse_url)
        return self._engine

    def accounts(self) -> dict[str, tuple[str, ...]]:
        """open_id -> (status, status_reason) of every account in the warehouse."""
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT open_id, status, status_reason FROM tiktok.accounts")).all()
        return {r.open_id: (r.status, r.status_reason) for r in rows}

    def page(self, session: requests.Session) -> tuple[str, str]:
        """GET the accounts page; return its HTML and the form's CSRF token."""
        answer = session.get(f"{self.app}/", timeout=30)
        assert answer.status_code == 200, answer.text[:500]
        found = CSRF.search(answer.text)
        return answer.text, found.group(1) if found else ""

    def start_connect(
        self, session: requests.Session, scopes: tuple[str, ...] = ("user.info.stats", "video.list"), **form: str
    ) -> dict[str, str]:
        """Press *Connect account*; return the query of the TikTok authorize URL it redirects to."""
        _, csrf = self.page(session)
        answer = session.post(
            f"{self.app}/connect",
            data={"csrf_token": csrf, "scope": list(scopes), **form},
            allow_redirects=False,
            timeout=30,
        )
        assert answer.status_code == 303, answer.text[:500]
        location = answer.headers["location"]
        assert location.startswith(f"{self.sim_url}/v2/auth/authorize/?"), location
        return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}

    def consent(self, authorize: dict[str, str], open_id: str, decision: str = "approve") -> str:
        """Answer TikTok's (the simulator's) consent page; return where it sends the browser."""
        page = requests.get(f"{self.sim_url}/v2/auth/authorize/", params=authorize, timeout=30)
        assert page.status_code == 200, page.text[:300]
        scopes = authorize["scope"].split(",")
        answer = requests.post(
            f"{self.sim_url}/v2/auth/authorize/",
            data={**authorize, "open_id": open_id, "decision": decision, "granted_scope": scopes},
            allow_redirects=False,
            timeout=30,
        )
        assert answer.status_code == 302, answer.text[:300]
        return answer.headers["location"]

    def connect(self, session: requests.Session | None = None, *, display_name: str | None = None) -> str:
        """Create a simulated creator and connect it through the UI; return its open_id."""
        session = session or self.browser()
        account = self.sim.create_account(videos=5, display_name=display_name)
        back = self.consent(self.start_connect(session), account["open_id"])
        answer = session.get(back, allow_redirects=False, timeout=60)
        assert answer.status_code == 303, answer.text[:800]
        assert "done=connected" in answer.headers["location"]
        return account["open_id"]


@contextlib.contextmanager
def accounts_stack(home: Path) -> Iterator[AccountsStack]:
    airflow_db, warehouse_db = f"{SETTINGS.airflow_db}_stack", f"{SETTINGS.warehouse_db}_stack"
    port, sim_port = _ui_port(), free_port()
    env = stack_env(
        home=home,
        airflow_db=airflow_db,
        warehouse_db=warehouse_db,
        sim_port=sim_port,
        TIKTOK_PG_SERVER=SETTINGS.pg_server,
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=USERS,
        AIRFLOW__TIKTOK_ACCOUNTS__PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        # Short, so that the hanging-revoke test waits seconds, not the default 10.
        AIRFLOW__TIKTOK_ACCOUNTS__REQUEST_TIMEOUT_SECONDS="3",
    )
    drop_databases(SETTINGS.pg_server, airflow_db, warehouse_db)
    stack = AccountsStack(
        url=f"http://127.0.0.1:{port}",
        sim_url=f"http://127.0.0.1:{sim_port}",
        home=home,
        warehouse_url=SETTINGS.database_url(warehouse_db),
        env=env,
    )

    try:
        began = time.monotonic()
        run_module(env, "tiktok_ops.bootstrap", timeout=180)
        run_module(env, "tiktok_tools.up", "start", "--sim-accounts", "1", "--sim-videos", "20", timeout=300)
        print(f"\naccounts stack on {stack.url} up in {time.monotonic() - began:.0f}s", file=sys.stderr)
        yield stack
    finally:
        if stack._engine is not None:
            stack._engine.dispose()
        # `up stop`, but SIGKILL after 10 s instead of 30: nothing of this stack needs a clean shutdown.
        stop = "from tiktok_tools import up; up.stop(up.configure(), timeout=10)"
        subprocess.run([sys.executable, "-c", stop], env=env, cwd=ROOT, capture_output=True, timeout=120)
        drop_databases(SETTINGS.pg_server, airflow_db, warehouse_db)


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccountsStack]:
    reuse = os.environ.get("TIKTOK_ACCOUNTS_REUSE_STACK")
    if reuse:  # while developing: "UI URL,simulator URL,AIRFLOW_HOME,warehouse database" of a running `make up`
        url, sim_url, home, database = reuse.split(",")
        yield AccountsStack(url, sim_url, Path(home), SETTINGS.database_url(database), dict(os.environ))
        return
    with accounts_stack(tmp_path_factory.mktemp("accounts-stack")) as running:
        yield running
