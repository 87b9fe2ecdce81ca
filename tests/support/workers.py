"""Start `spatialjoin worker` processes for tests, and stop them by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from spatialjoin_devstack.procs import free_port

SPATIALJOIN = str(Path(sys.executable).parent / "spatialjoin")


class WorkerProcess:
    """One worker subprocess with its own log file."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.metrics_port = free_port()
        full_env = {**os.environ, **env, "SPATIALJOIN_METRICS_PORT": str(self.metrics_port),
                    "SPATIALJOIN_METRICS_ADDR": "127.0.0.1"}
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen([SPATIALJOIN, "worker"], env=full_env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 40) -> int:
        """SIGTERM, then wait; SIGKILL if it will not stop. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no commit, no cleanup."""
        self.proc.kill()
        self.proc.wait(10)


@contextmanager
def running_workers(env: Mapping[str, str], log_dir: Path, count: int = 1,
                    ) -> Iterator[list[WorkerProcess]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = [WorkerProcess({**env, "SPATIALJOIN_WORKER_ID": f"w{i}"},
                             log_dir / f"worker-{i}.log") for i in range(count)]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.terminate()

