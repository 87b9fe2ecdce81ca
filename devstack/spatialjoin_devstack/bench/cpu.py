"""CPU seconds from /proc: a process, the database's processes, and the whole machine.

On a 2-core machine the wall time of a job cannot be less than its CPU time
(worker + PostgreSQL + the object store) over 2, so the benchmark reports
where the CPU went next to how long things took.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    # The command name may hold spaces and parentheses: split after the last ')'.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_seconds(pid: int, *, with_reaped_children: bool = False) -> float:
    """user + system time of ``pid`` (plus its reaped children's when asked)."""
    fields = _stat_fields(pid)
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[1]) == parent:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile
    return found


def postmaster_pid(database_url: str) -> int:
    """The PostgreSQL server process: the parent of our own backend."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return int(_stat_fields(int(row[0]))[1])  # while the backend is still there


def database_cpu_seconds(postmaster: int, attempts: int = 10) -> float:
    """CPU of the server and all its backends, live or exited (reaped by the postmaster).

    A backend reaped while its siblings are being read would be in neither the
    parent's total nor the list (and would land in the next window's figure):
    read again until the parent's reaped total did not move meanwhile.
    """
    total = 0.0
    for _ in range(attempts):
        before = process_cpu_seconds(postmaster, with_reaped_children=True)
        total = before
        for child in _children(postmaster):
            try:
                total += process_cpu_seconds(child)
            except OSError:
                continue  # reaped meanwhile: the check below notices
        if process_cpu_seconds(postmaster, with_reaped_children=True) == before:
            return total
    return total


def machine_busy_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (every process, ours or not)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    guest = sum(values[8:10]) if len(values) > 9 else 0  # already counted in user/nice
    return (sum(values) - idle - guest) / _TICKS


def services_cpu_seconds(pids: list[int]) -> float:
    """CPU of the stack's other services (object store, Kafka), children included."""
    total = 0.0
    for pid in pids:
        try:
            total += process_cpu_seconds(pid, with_reaped_children=True)
        except OSError:
            continue
    return total


def stack_service_pids(names: tuple[str, ...] = ("s3", "kafka")) -> list[int]:
    """Pids of the local stack's object store and broker, from its pid files."""
    from ..paths import state_dir

    pids = []
    for name in names:
        try:
            pids.append(int((state_dir() / "run" / f"{name}.pid").read_text().strip()))
        except (OSError, ValueError):
            continue
    return pids


@dataclass
class CpuWindow:
    """CPU used between start() and stop() by the database, S3 + Kafka, and the machine."""

    database_url: str
    database_s: float = 0.0
    services_s: float = 0.0
    machine_s: float = 0.0
    _postmaster: int = 0
    _services: list[int] = field(default_factory=list)
    _db_before: float = 0.0
    _services_before: float = 0.0
    _machine_before: float = 0.0

    def start(self) -> None:
        self._postmaster = postmaster_pid(self.database_url)
        self._services = stack_service_pids()
        self._db_before = database_cpu_seconds(self._postmaster)
        self._services_before = services_cpu_seconds(self._services)
        self._machine_before = machine_busy_cpu_seconds()

    def stop(self) -> None:
        self.database_s = database_cpu_seconds(self._postmaster) - self._db_before
        self.services_s = services_cpu_seconds(self._services) - self._services_before
        self.machine_s = machine_busy_cpu_seconds() - self._machine_before


def timed_cpu(database_url: str, work: Callable[[], object]) -> tuple[object, CpuWindow]:
    window = CpuWindow(database_url)
    window.start()
    result = work()
    window.stop()
    return result, window
