"""What ``/proc/<pid>/stat`` says of processes (Linux): the stack's and the embedded server's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    """What /proc/<pid>/stat says of one process."""

    pid: int
    ppid: int
    session: int
    start: int  # clock ticks after boot: with the pid, identifies a process even if the pid is reused
    zombie: bool


def proc(pid: int) -> Proc | None:
    """The process ``pid``, or None when /proc has no such process (or cannot be read)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # fields[0] is the 3rd field of proc(5)
    return Proc(pid, int(fields[1]), int(fields[3]), int(fields[19]), fields[0] in ("Z", "X"))


def processes() -> dict[int, Proc]:
    """Every live process (zombies left out), by pid."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (found := proc(int(entry.name))) is not None and not found.zombie:
            table[found.pid] = found
    return table
