"""The local runner as a stack component: it plays the kubelet for worker pods.

The control plane has no nodes, so without this process a worker
Deployment's pods never run. See :mod:`spatialjoin_devstack.runner` for
what it does and its one deviation from the pod spec (local ports).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .. import procs
from ..podspec import WORKER_SELECTOR as DEFAULT_SELECTOR
from ..waiting import wait_for
from .base import Settings, StackContext

START_TIMEOUT = 60.0  # a previous runner's orphans get up to 30 s to stop first
STOP_TIMEOUT = 40.0  # longer than the runner's 30 s grace cap for its pods
HEARTBEAT_MAX_AGE = 10.0


class RunnerComponent:
    """Runs the pods that match the worker selector as processes on this host."""

    name = "runner"

    def install(self, ctx: StackContext) -> None:
        """Nothing to install: the runner is part of this package."""

    def start(self, ctx: StackContext) -> Settings:
        """Start the runner; ready once its heartbeat says it listed pods from the apiserver."""
        kubernetes = ctx.settings.get("kubernetes") or {}
        if "kubeconfig" not in kubernetes:
            raise RuntimeError("the runner needs the kubernetes component started first")
        procs.stop_process(ctx.run_dir, self.name, timeout=STOP_TIMEOUT)
        log_dir = ctx.state_dir / "pods"
        heartbeat = self._heartbeat(ctx)
        heartbeat.unlink(missing_ok=True)
        pid = procs.start_process(self.name, [
            sys.executable, "-m", "spatialjoin_devstack.runner",
            "--kubeconfig", str(kubernetes["kubeconfig"]), "--log-dir", str(log_dir),
            "--selector", DEFAULT_SELECTOR, "--heartbeat", str(heartbeat),
        ], ctx.run_dir)
        try:
            outcome = wait_for(
                lambda: _synced(heartbeat) or (None if procs.pid_alive(pid) else "exited"),
                timeout=START_TIMEOUT, what="runner heartbeat after its first pod list")
            if outcome == "exited":
                raise RuntimeError(f"runner exited during start; see {ctx.run_dir / 'runner.log'}")
        except BaseException:
            procs.stop_process(ctx.run_dir, self.name, timeout=STOP_TIMEOUT)
            raise
        return {"log_dir": str(log_dir), "selector": DEFAULT_SELECTOR,
                "heartbeat": str(heartbeat)}

    def healthy(self, ctx: StackContext, settings: Settings) -> bool:
        """The process runs and its loop wrote a heartbeat within the last 10 s."""
        if procs.read_pid(ctx.run_dir, self.name) is None:
            return False
        heartbeat = Path(settings.get("heartbeat") or self._heartbeat(ctx))
        try:
            age = time.time() - heartbeat.stat().st_mtime
        except FileNotFoundError:
            return False
        return age < HEARTBEAT_MAX_AGE

    def env(self, settings: Settings) -> dict[str, str]:
        """The runner publishes no connection settings."""
        return {}

    def stop(self, ctx: StackContext) -> None:
        """SIGTERM the runner, which stops its pod processes within their grace periods."""
        procs.stop_process(ctx.run_dir, self.name, timeout=STOP_TIMEOUT)

    @staticmethod
    def _heartbeat(ctx: StackContext) -> Path:
        return ctx.run_dir / "runner.heartbeat"


def _synced(heartbeat: Path) -> bool:
    """The heartbeat exists and the runner has listed pods successfully at least once."""
    try:
        return bool(json.loads(heartbeat.read_text()).get("synced"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False
