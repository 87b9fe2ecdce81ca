"""Start detached service processes with pid files, and stop them by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .waiting import wait_for


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def start_process(
    name: str,
    argv: Sequence[str],
    run_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> int:
    """Start ``argv`` in its own session, logging to run_dir/NAME.log; write NAME.pid.

    The process outlives this one (the stack stays up between commands) and
    is stopped later with :func:`stop_process` by the recorded pid.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.Popen(
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=str(cwd) if cwd else None,
        env=full_env,
        start_new_session=True,
        user=user,
    )
    log.close()
    (run_dir / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def read_pid(run_dir: Path, name: str) -> int | None:
    """The recorded pid of NAME when that process is still alive."""
    pid_file = run_dir / f"{name}.pid"
    if not pid_file.exists():
        return None
    try:
        pid = int(pid_file.read_text().strip())
    except ValueError:
        return None
    return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().split(") ", 1)[1][0] != "Z"
    return True


def stop_process(run_dir: Path, name: str, *, timeout: float = 15.0) -> bool:
    """SIGTERM the recorded process group, SIGKILL it after ``timeout``; True if one ran."""
    pid = read_pid(run_dir, name)
    (run_dir / f"{name}.pid").unlink(missing_ok=True)
    if pid is None:
        return False
    _signal_group(pid, signal.SIGTERM)
    try:
        wait_for(lambda: not pid_alive(pid), timeout=timeout, what=f"{name} (pid {pid}) to exit")
    except TimeoutError:
        _signal_group(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), timeout=5, what=f"{name} (pid {pid}) to die")
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def elapsed_since(start: float) -> str:
    """A human string of the seconds since ``start`` (time.monotonic)."""
    return f"{time.monotonic() - start:.1f}s"
