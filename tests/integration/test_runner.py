"""The local runner plays the kubelet for a real Deployment on the real control plane.

A Deployment's ReplicaSet creates pods that no scheduler or kubelet will
ever run; the runner starts one process per pod with the environment a
kubelet would resolve (Secret, downward API, $(VAR) expansion), reports
status so the Deployment counts ready replicas, restarts a crashed process,
and stops processes when pods go away.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from spatialjoin_devstack import procs, stack
from spatialjoin_devstack.components.runner import RunnerComponent
from spatialjoin_devstack.podspec import PORTS_ANNOTATION
from spatialjoin_devstack.waiting import wait_for

pytestmark = pytest.mark.integration

SECRET_VALUE = "s3cr3t-for-the-runner"
TIMEOUT = 60.0

# The "worker": serves /healthz on the metrics port the runner assigned, records
# its pid, argv and environment in OUT_DIR/<pod>.json (atomically), ignores
# SIGTERM when IGNORE_SIGTERM is set, and exits on its own if its parent (the
# runner) goes away without stopping it.
SCRIPT = r"""
import json, os, signal, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass

if os.environ.get("IGNORE_SIGTERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
server = HTTPServer(("127.0.0.1", int(os.environ["SPATIALJOIN_METRICS_PORT"])), Health)
out = Path(os.environ["OUT_DIR"]) / (os.environ["POD_NAME"] + ".json")
tmp = out.with_name(out.name + ".tmp")
tmp.write_text(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:], "env": dict(os.environ)}))
tmp.replace(out)
parent = os.getppid()

def leave_with_parent():
    ticker = threading.Event()
    while not ticker.wait(1.0):
        if os.getppid() != parent:
            os._exit(0)

threading.Thread(target=leave_with_parent, daemon=True).start()
server.serve_forever()
"""


@dataclass
class Cluster:
    """API handles (typed Any: the client takes the plain dict bodies used here) and the
    runner's settings from the shared stack."""

    core: Any
    apps: Any
    runner: dict[str, Any]


@pytest.fixture
def cluster(kube_api: Any, stack_settings: dict[str, dict[str, Any]]) -> Cluster:
    return Cluster(client.CoreV1Api(kube_api), client.AppsV1Api(kube_api),
                   stack_settings["runner"])


WORKER_LABELS = {"app.kubernetes.io/part-of": "spatialjoin",
                 "app.kubernetes.io/component": "worker"}


def _deployment(name: str, out_dir: Path, secret: str, *, replicas: int = 2,
                labels: dict[str, str] | None = None,
                extra_env: tuple[dict[str, str], ...] = ()) -> dict[str, Any]:
    """A worker-like Deployment; ``labels`` replace the selector labels the runner watches."""
    labels = {**(WORKER_LABELS if labels is None else labels),
              "app.kubernetes.io/instance": name}
    container = {
        "name": "worker", "image": "spatialjoin-worker:dev",
        "command": [sys.executable, "-c", SCRIPT, "$(POD_NAME)"],
        "ports": [{"name": "metrics", "containerPort": 9100}],
        "env": [
            {"name": "OUT_DIR", "value": str(out_dir)},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "DB_PASSWORD",
             "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}},
            {"name": "GREETING", "value": "hello-$(POD_NAME)"},
            {"name": "SPATIALJOIN_METRICS_PORT", "value": "9100"},  # the runner overrides it
            *extra_env,
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"},
                           "periodSeconds": 1},
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"terminationGracePeriodSeconds": 5, "containers": [container]}}},
    }


def _create_secret(cluster: Cluster, namespace: str, name: str) -> None:
    cluster.core.create_namespaced_secret(
        namespace, {"metadata": {"name": name}, "stringData": {"password": SECRET_VALUE}})


def _pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    pods = cluster.core.list_namespaced_pod(namespace).items
    return [cluster.core.api_client.sanitize_for_serialization(p) for p in pods]


def _records(out_dir: Path, count: int | None = None) -> dict[str, dict[str, Any]]:
    """What each worker process wrote about itself, by pod name; {} until ``count`` exist."""
    records = {p.stem: json.loads(p.read_text()) for p in out_dir.glob("*.json")}
    return records if count is None or len(records) == count else {}


def _ready_replicas(cluster: Cluster, namespace: str, name: str) -> int:
    status = cluster.apps.read_namespaced_deployment_status(name, namespace).status
    return int(status.ready_replicas or 0) if status else 0


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if procs.pid_alive(pid)}


def test_deployment_runs_scales_restarts_and_stops(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    _create_secret(cluster, namespace, "worker-secret")
    cluster.apps.create_namespaced_deployment(
        namespace, _deployment("workers", tmp_path, "worker-secret"))

    wait_for(lambda: _ready_replicas(cluster, namespace, "workers") == 2, timeout=TIMEOUT,
             what="2 ready replicas")
    pods = {p["metadata"]["name"]: p for p in _pods(cluster, namespace)}
    records = wait_for(lambda: _records(tmp_path, count=2), timeout=TIMEOUT,
                       what="both workers' records")
    assert set(records) == set(pods)
    for name, record in records.items():
        _assert_resolved_like_a_kubelet(name, record, pods[name], cluster.runner)
    seen_pids = {r["pid"] for r in records.values()}

    cluster.apps.patch_namespaced_deployment_scale(namespace=namespace, name="workers",
                                                   body={"spec": {"replicas": 1}})
    wait_for(lambda: len(_alive(seen_pids)) == 1 and len(_pods(cluster, namespace)) == 1,
             timeout=TIMEOUT, what="one process and one pod after scaling to 1")
    (survivor,) = _pods(cluster, namespace)
    survivor_name = survivor["metadata"]["name"]
    assert _alive(seen_pids) == {records[survivor_name]["pid"]}

    os.kill(records[survivor_name]["pid"], signal.SIGKILL)
    restarted = wait_for(lambda: _restarted(cluster, namespace, tmp_path, survivor_name,
                                            records[survivor_name]["pid"]),
                         timeout=TIMEOUT, what="the killed worker to restart")
    seen_pids.add(restarted)
    wait_for(lambda: _ready_replicas(cluster, namespace, "workers") == 1, timeout=TIMEOUT,
             what="the restarted replica ready")
    status = _pods(cluster, namespace)[0]["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 128 + signal.SIGKILL

    cluster.apps.delete_namespaced_deployment("workers", namespace,
                                              propagation_policy="Foreground")
    log_dir = Path(cluster.runner["log_dir"])
    wait_for(lambda: not _alive(seen_pids) and not _pods(cluster, namespace)
             and not list(log_dir.glob(f"{namespace}_*.pid")),
             timeout=TIMEOUT, what="no worker process, pod or pid file after deleting")


def _assert_resolved_like_a_kubelet(name: str, record: dict[str, Any], pod: dict[str, Any],
                                    runner: dict[str, Any]) -> None:
    env = record["env"]
    assert env["DB_PASSWORD"] == SECRET_VALUE
    assert env["POD_NAME"] == name
    assert env["GREETING"] == f"hello-{name}"
    assert record["argv"] == [name]
    assert env["SPATIALJOIN_WORKER_ID"] == env["HOSTNAME"] == name
    assert set(env) == {  # the pod's env, the runner's additions, the "image" env: no leaks
        "OUT_DIR", "POD_NAME", "DB_PASSWORD", "GREETING", "SPATIALJOIN_METRICS_PORT",
        "SPATIALJOIN_METRICS_ADDR",
        "SPATIALJOIN_WORKER_ID", "HOSTNAME", "PATH", "HOME", "LANG", "PYTHONUNBUFFERED"}
    local_ports = json.loads(pod["metadata"]["annotations"][PORTS_ANNOTATION])
    assert local_ports == {"metrics": int(env["SPATIALJOIN_METRICS_PORT"])}
    assert local_ports["metrics"] != 9100
    status = pod["status"]
    assert (status["phase"], status["podIP"], status["hostIP"]) == ("Running",) + ("127.0.0.1",) * 2
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == dict.fromkeys(
        ("PodScheduled", "Initialized", "ContainersReady", "Ready"), "True")
    (container,) = status["containerStatuses"]
    assert container["state"]["running"]["startedAt"]
    assert container["containerID"] == f"local://{record['pid']}"
    namespace = pod["metadata"]["namespace"]
    assert (Path(runner["log_dir"]) / f"{namespace}_{name}.log").exists()


def _restarted(cluster: Cluster, namespace: str, out_dir: Path, pod_name: str,
               old_pid: int) -> int | None:
    """The new pid once the runner restarted the pod's process and reported restartCount 1."""
    record = _records(out_dir).get(pod_name) or {}
    pid = record.get("pid")
    if pid in (None, old_pid) or not procs.pid_alive(pid):
        return None
    (pod,) = _pods(cluster, namespace)
    statuses = pod["status"].get("containerStatuses") or [{}]
    return int(pid) if statuses[0].get("restartCount") == 1 else None


def test_missing_secret_waits_with_config_error_then_starts(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster.apps.create_namespaced_deployment(
        namespace, _deployment("late-secret", tmp_path, "not-yet", replicas=1))

    def waiting_reason() -> str | None:
        pods = _pods(cluster, namespace)
        statuses = (pods[0].get("status") or {}).get("containerStatuses") if pods else None
        return statuses[0]["state"].get("waiting", {}).get("reason") if statuses else None

    assert wait_for(lambda: waiting_reason() == "CreateContainerConfigError", timeout=TIMEOUT,
                    what="CreateContainerConfigError for the missing Secret")
    assert _pods(cluster, namespace)[0]["status"]["phase"] == "Pending"
    assert not _records(tmp_path)

    _create_secret(cluster, namespace, "not-yet")
    wait_for(lambda: _ready_replicas(cluster, namespace, "late-secret") == 1, timeout=TIMEOUT,
             what="the replica ready once its Secret exists")
    (record,) = _records(tmp_path).values()
    assert record["env"]["DB_PASSWORD"] == SECRET_VALUE
    cluster.apps.delete_namespaced_deployment("late-secret", namespace)
    wait_for(lambda: not procs.pid_alive(record["pid"]), timeout=TIMEOUT,
             what="the worker to stop with its Deployment")


def test_component_reports_health(cluster: Cluster) -> None:
    runner, ctx = RunnerComponent(), stack.context()
    settings = cluster.runner
    assert runner.healthy(ctx, settings)
    assert settings["selector"] == (
        "app.kubernetes.io/part-of=spatialjoin,app.kubernetes.io/component=worker")
    assert runner.env(settings) == {}
    heartbeat = json.loads(Path(settings["heartbeat"]).read_text())
    assert heartbeat["synced"] and heartbeat["pid"] == procs.read_pid(ctx.run_dir, "runner")


def test_sigterm_ignored_until_the_grace_period_then_killed(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    _create_secret(cluster, namespace, "worker-secret")
    deployment = _deployment("stubborn", tmp_path, "worker-secret", replicas=1,
                             extra_env=({"name": "IGNORE_SIGTERM", "value": "1"},))
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 2
    cluster.apps.create_namespaced_deployment(namespace, deployment)
    wait_for(lambda: _ready_replicas(cluster, namespace, "stubborn") == 1, timeout=TIMEOUT,
             what="the stubborn replica ready")
    (record,) = _records(tmp_path).values()

    deleted_at = time.monotonic()
    cluster.apps.patch_namespaced_deployment_scale(namespace=namespace, name="stubborn",
                                                   body={"spec": {"replicas": 0}})
    wait_for(lambda: not procs.pid_alive(record["pid"]), timeout=TIMEOUT,
             what="SIGKILL after the grace period")
    assert time.monotonic() - deleted_at >= 1.5  # it survived SIGTERM until the grace ran out
    log = (stack.context().run_dir / "runner.log").read_text()
    assert "ignored SIGTERM for its grace period: SIGKILL" in log


def test_runner_sigterm_stops_its_processes_and_exits_zero(
    cluster: Cluster, namespace: str, tmp_path: Path, stack_settings: dict[str, dict[str, Any]]
) -> None:
    """A second runner with its own selector, so it never competes with the stack's runner."""
    selector_label = {"spatialjoin.io/test-runner": namespace}
    heartbeat = tmp_path / "runner.heartbeat"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with open(tmp_path / "runner.log", "wb") as output:
        runner = subprocess.Popen(
            [sys.executable, "-m", "spatialjoin_devstack.runner",
             "--kubeconfig", stack_settings["kubernetes"]["kubeconfig"],
             "--log-dir", str(tmp_path / "pods"), "--heartbeat", str(heartbeat),
             "--selector", f"spatialjoin.io/test-runner={namespace}", "--interval", "0.5"],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _create_secret(cluster, namespace, "worker-secret")
        cluster.apps.create_namespaced_deployment(namespace, _deployment(
            "private", out_dir, "worker-secret", replicas=1, labels=selector_label))
        wait_for(lambda: _ready_replicas(cluster, namespace, "private") == 1, timeout=TIMEOUT,
                 what="the second runner's replica ready")
        (record,) = _records(out_dir).values()
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=TIMEOUT) == 0
        assert not procs.pid_alive(record["pid"])
        assert not heartbeat.exists()
        assert not list((tmp_path / "pods").glob("*.pid"))
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
