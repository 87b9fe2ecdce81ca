"""The local runner: the kubelet's part for worker pods on a control plane without nodes.

The devstack runs a real kube-apiserver and controller-manager but no
kubelet and no scheduler, so the pods a Deployment's ReplicaSet creates are
never run. This process runs them as processes on this host, one per pod,
and reports back like a kubelet: pod phase, IPs, conditions and container
statuses through the ``pods/status`` subresource, readiness from the
container's readinessProbe, restarts with exponential backoff. When a pod is
deleted (scaled down, rolled) its process gets SIGTERM and, after the grace
period, SIGKILL. On SIGTERM/SIGINT the runner stops every process the same
way and exits 0. Every decision is a pure function in
:mod:`spatialjoin_devstack.podspec`; this module only acts.

Run: ``python -m spatialjoin_devstack.runner --kubeconfig PATH --log-dir DIR
[--selector LABELSELECTOR] [--interval 1.0] [--heartbeat FILE]``. Each pod's
output goes to ``DIR/<namespace>_<pod>.log`` and its pid to
``DIR/<namespace>_<pod>.pid``.

**The one deviation from the pod spec: ports.** Every replica runs on this one
host, so each replica's declared containerPorts would collide. Each
containerPort gets a free 127.0.0.1 port instead; the port named
``metrics`` is handed to the process as ``SPATIALJOIN_METRICS_PORT``
(overriding a value from the spec), probes use the assigned ports, and the
mapping (port name, or number when unnamed -> local port) is recorded as
JSON in the pod annotation ``spatialjoin.io/local-ports``.

What a container runtime adds is added too: ``HOSTNAME`` (the pod name), a
minimal image environment (``PATH`` starting with this virtualenv, ``HOME``,
``LANG``, ``PYTHONUNBUFFERED``) and ``SPATIALJOIN_WORKER_ID`` (the pod name,
unless the spec sets it). Nothing else leaks from the runner's own
environment, so a Deployment that misses a setting fails here as it would
in a cluster. A command starting with ``spatialjoin`` runs the console
script of this virtualenv; a container without a command runs
``--entrypoint`` (the image's ENTRYPOINT stand-in) with its args.

Not emulated: images and volumes, init containers and every container after
the first, liveness and startup probes, preStop hooks, resource limits,
service-link variables; restartPolicy is always Always (all a Deployment
allows). Pods are never bound to a node, so the apiserver deletes them at
once instead of gracefully: the runner notices a pod is gone, not that it is
terminating, and takes the grace period from the pod it saw last.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from types import FrameType
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from . import podspec
from .podspec import ContainerConfigError, ContainerView, EnvSources, NodeInfo, Obj, Termination
from .procs import free_port, pid_alive, port_open
from .waiting import DeadlineExceeded, wait_for

DEFAULT_SELECTOR = podspec.WORKER_SELECTOR
REQUEST_TIMEOUT = (3.0, 10.0)  # connect, read: a hung apiserver must not stall supervision
MERGE_PATCH = "application/merge-patch+json"

log = logging.getLogger("spatialjoin.runner")


# --- the apiserver ----------------------------------------------------------------------


class Cluster:
    """The few apiserver calls the runner makes, as raw JSON dicts.

    The client is rebuilt when the kubeconfig file changes or after an error:
    restarting the devstack's control plane writes a new CA, token and port
    into the same file, and the runner must follow without a restart.
    """

    def __init__(self, kubeconfig: Path) -> None:
        self._kubeconfig = kubeconfig
        self._api: client.CoreV1Api | None = None
        self._signature: tuple[int, int] | None = None

    def _core(self) -> client.CoreV1Api:
        stat = self._kubeconfig.stat()
        signature = (stat.st_mtime_ns, stat.st_size)
        if self._api is None or signature != self._signature:
            api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(self._kubeconfig))  # kubernetes.config has no annotations
            self._api, self._signature = client.CoreV1Api(api_client), signature
        return self._api

    def reset(self) -> None:
        """Forget the client so the next call reads the kubeconfig again."""
        self._api = None

    def list_pods(self, selector: str) -> list[dict[str, Any]]:
        response: Any = self._core().list_pod_for_all_namespaces(  # raw: the JSON as sent
            label_selector=selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items

    def env_sources(self, namespace: str, container: Obj) -> EnvSources:
        """The Secrets and ConfigMaps the container refers to; missing ones are left out."""
        secret_names, config_map_names = podspec.referenced_sources(container)
        core = self._core()
        secrets = {n: self._read(core.read_namespaced_secret, n, namespace) for n in secret_names}
        config_maps = {n: self._read(core.read_namespaced_config_map, n, namespace)
                       for n in config_map_names}
        return EnvSources(secrets={k: v for k, v in secrets.items() if v is not None},
                          config_maps={k: v for k, v in config_maps.items() if v is not None})

    @staticmethod
    def _read(reader: Callable[..., Any], name: str, namespace: str) -> dict[str, Any] | None:
        try:
            response = reader(name, namespace, _preload_content=False,
                              _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        found: dict[str, Any] = json.loads(response.data)
        return found

    def patch_status(self, pod: Obj, status: dict[str, Any]) -> None:
        """Merge-patch pods/status; the uid makes it fail on a same-named newer pod."""
        meta = pod["metadata"]
        body = {"metadata": {"uid": meta["uid"]}, "status": status}
        self._core().patch_namespaced_pod_status(
            meta["name"], meta["namespace"], body, _content_type=MERGE_PATCH,
            _preload_content=False, _request_timeout=REQUEST_TIMEOUT)

    def annotate(self, pod: Obj, key: str, value: str) -> None:
        meta = pod["metadata"]
        body = {"metadata": {"uid": meta["uid"], "annotations": {key: value}}}
        self._core().patch_namespaced_pod(
            meta["name"], meta["namespace"], body, _content_type=MERGE_PATCH,
            _preload_content=False, _request_timeout=REQUEST_TIMEOUT)


# --- one pod's process ------------------------------------------------------------------


@dataclass
class Replica:
    """One pod's container on this host, across its restarts; keyed by pod uid."""

    pod: dict[str, Any]
    start_time: str
    ports: dict[int, int]
    restart_count: int = 0
    runs: int = 0
    popen: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    running_since: str | None = None
    started_at: float = 0.0
    failures: int = 0
    not_before: float = 0.0
    waiting: tuple[str, str] = ("ContainerCreating", "")
    last: Termination | None = None
    ready: bool = False
    stop_deadline: float | None = None
    killed: bool = False

    @property
    def key(self) -> str:
        meta = self.pod["metadata"]
        return f"{meta['namespace']}_{meta['name']}"

    @property
    def container(self) -> Obj:
        return podspec.first_container(self.pod)


@dataclass(frozen=True)
class Options:
    """How the runner was started."""

    log_dir: Path
    selector: str = DEFAULT_SELECTOR
    entrypoint: tuple[str, ...] = ("spatialjoin",)
    spatialjoin: str = str(Path(sys.executable).with_name("spatialjoin"))


class Runner:
    """Reconciles the listed pods with the processes on this host, one step per loop."""

    def __init__(self, cluster: Cluster, options: Options, node: NodeInfo,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cluster, self._options, self._node, self._clock = cluster, options, node, clock
        self.replicas: dict[str, Replica] = {}
        self.terminating: list[Replica] = []
        self.synced = False
        self._errors: set[str] = set()

    def step(self) -> bool:
        """List, start/stop, supervise, probe and report once; False when the apiserver failed."""
        pods = self._list()
        if pods is not None:
            self._reconcile(pods)
        for replica in list(self.replicas.values()):
            self._supervise(replica)
        self.reap()
        if pods is not None:
            for replica in list(self.replicas.values()):
                self._report(replica)
        return pods is not None

    def _list(self) -> list[dict[str, Any]] | None:
        try:
            pods = self._cluster.list_pods(self._options.selector)
        except Exception as exc:  # apiserver down or restarting: keep supervising
            self._api_failed("list pods", exc)
            return None
        if self._errors:
            log.info("apiserver reachable again")
            self._errors.clear()
        self.synced = True
        return pods

    def _api_failed(self, what: str, exc: Exception) -> None:
        """Log each distinct apiserver failure once per outage, and reconnect next time."""
        message = f"{what}: {exc!r}"[:500]
        if message not in self._errors:
            log.warning("apiserver call failed, will retry: %s", message)
            self._errors.add(message)
        self._cluster.reset()

    def _reconcile(self, pods: Sequence[dict[str, Any]]) -> None:
        """Start tracking new live pods; terminate the processes of gone or deleted ones."""
        listed = {pod["metadata"]["uid"]: pod for pod in pods}
        for uid, replica in list(self.replicas.items()):
            pod = listed.get(uid)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                self._terminate(self.replicas.pop(uid), pod or replica.pod)
            else:
                replica.pod = pod
        for uid, pod in listed.items():
            if uid not in self.replicas and not pod["metadata"].get("deletionTimestamp"):
                self.replicas[uid] = self._adopt(pod)

    def _adopt(self, pod: dict[str, Any]) -> Replica:
        """A new Replica; restart counts continue from the pod's status (runner restarts)."""
        status = pod.get("status") or {}
        previous = (status.get("containerStatuses") or [{}])[0]
        has_run = bool((previous.get("state") or {}).get("running")
                       or (previous.get("lastState") or {}).get("terminated"))
        container = podspec.first_container(pod)
        annotation = (pod["metadata"].get("annotations") or {}).get(podspec.PORTS_ANNOTATION)
        reusable = {number: local for number, local
                    in podspec.recorded_ports(container, annotation).items()
                    if not port_open(local)}
        return Replica(pod=pod, start_time=status.get("startTime") or _now(),
                       ports=podspec.assign_ports(container, reusable, free_port),
                       restart_count=int(previous.get("restartCount") or 0), runs=int(has_run))

    def _supervise(self, replica: Replica) -> None:
        """Notice an exit, (re)start when the backoff allows it, and probe readiness."""
        if replica.popen is not None and _exited(replica.popen):
            self._record_exit(replica)
        if replica.popen is None and self._clock() >= replica.not_before:
            self._start(replica)
        replica.ready = self._probe(replica)

    def _start(self, replica: Replica) -> None:
        try:
            env, argv = self._container_config(replica)
        except ContainerConfigError as exc:
            replica.waiting = ("CreateContainerConfigError", str(exc))
            return
        except Exception as exc:  # Secrets/ConfigMaps unreadable now: try again next loop
            self._api_failed(f"env sources of {replica.key}", exc)
            return
        try:
            replica.popen = self._spawn(replica, env, argv)
        except OSError as exc:
            self._backoff(replica, ran_for=0.0, waiting=("RunContainerError", str(exc)))
            return
        if replica.runs:
            replica.restart_count += 1
        replica.runs += 1
        replica.env, replica.running_since, replica.started_at = env, _now(), self._clock()
        _write_pid_file(self._pid_file(replica), replica.popen.pid)
        log.info("started %s (pid %d, restarts %d): %.300r", replica.key, replica.popen.pid,
                 replica.restart_count, argv)

    def _container_config(self, replica: Replica) -> tuple[dict[str, str], list[str]]:
        """The process environment and argv, resolved fresh at every (re)start like kubelet."""
        pod, container = replica.pod, replica.container
        sources = self._cluster.env_sources(pod["metadata"]["namespace"], container)
        pod_env = podspec.resolve_env(pod, container, sources, self._node)
        pod_env = podspec.runner_env(pod, container, pod_env, replica.ports)
        argv = podspec.command_line(container, pod_env, self._options.entrypoint,
                                    self._options.spatialjoin)
        return {**_image_env(pod["metadata"]["name"]), **pod_env}, argv

    def _spawn(self, replica: Replica, env: dict[str, str],
               argv: list[str]) -> subprocess.Popen[bytes]:
        """The container's process in its own session (its process group is the container)."""
        workdir = replica.container.get("workingDir")
        cwd = workdir if workdir and Path(workdir).is_dir() else self._options.log_dir
        with open(self._options.log_dir / f"{replica.key}.log", "ab") as output:
            return subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                    stdout=output, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def _record_exit(self, replica: Replica) -> None:
        assert replica.popen is not None
        code = podspec.exit_code(replica.popen.returncode)
        _remove_pid_file(self._pid_file(replica), replica.popen.pid)
        replica.last = Termination(code, replica.running_since or _now(), _now())
        replica.popen, replica.running_since = None, None
        delay = self._backoff(replica, ran_for=self._clock() - replica.started_at)
        log.warning("%s exited with %d; restart in %.0fs", replica.key, code, delay)

    def _backoff(self, replica: Replica, *, ran_for: float,
                 waiting: tuple[str, str] | None = None) -> float:
        """Schedule the next start after a failed run; returns the delay."""
        replica.failures = podspec.next_failure_count(replica.failures, ran_for)
        now = self._clock()
        replica.not_before = podspec.restart_at(now, replica.failures)
        delay = replica.not_before - now
        name, pod = replica.container["name"], replica.pod["metadata"]["name"]
        replica.waiting = waiting or (
            "CrashLoopBackOff", f"back-off {delay:.0f}s restarting failed container={name} "
                                f"pod={pod}")
        return delay

    def _probe(self, replica: Replica) -> bool:
        """Ready: the process runs and its readinessProbe (if any) passes right now."""
        if replica.popen is None:
            return False
        probe = podspec.readiness_probe(replica.container, replica.ports)
        if probe is None:
            return True
        if self._clock() < replica.started_at + probe.initial_delay:
            return False
        return run_probe(probe, replica.env)

    def _report(self, replica: Replica) -> None:
        """Patch the pod's status and ports annotation, only when they differ from the pod's."""
        pod = replica.pod
        try:
            ports = json.dumps(podspec.ports_annotation(replica.container, replica.ports),
                               sort_keys=True)
            annotations = pod["metadata"].get("annotations") or {}
            if replica.ports and annotations.get(podspec.PORTS_ANNOTATION) != ports:
                self._cluster.annotate(pod, podspec.PORTS_ANNOTATION, ports)
            desired = podspec.pod_status(pod.get("status") or {}, self._view(replica),
                                         replica.start_time, _now(), self._node)
            if podspec.status_differs(desired, pod.get("status") or {}):
                self._cluster.patch_status(pod, desired)
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone or changed meanwhile: the next list tells
                self._api_failed(f"report {replica.key}", exc)
        except Exception as exc:  # connection errors: the next loop reports again
            self._api_failed(f"report {replica.key}", exc)

    def _view(self, replica: Replica) -> ContainerView:
        container = replica.container
        return ContainerView(
            name=container["name"], image=container.get("image") or "",
            pid=replica.popen.pid if replica.popen else None,
            running_since=replica.running_since, ready=replica.ready,
            restart_count=replica.restart_count,
            waiting=None if replica.popen else replica.waiting, last=replica.last)

    def _terminate(self, replica: Replica, pod: Obj) -> None:
        """SIGTERM the process group now; :meth:`reap` sends SIGKILL after the grace period."""
        grace = podspec.grace_seconds(pod)
        if replica.popen is not None and not _exited(replica.popen):
            log.info("stopping %s (pid %d, grace %.0fs)", replica.key, replica.popen.pid, grace)
            _signal_group(replica.popen.pid, signal.SIGTERM)
        replica.stop_deadline = self._clock() + grace
        self.terminating.append(replica)

    def reap(self) -> bool:
        """Forget terminated processes, SIGKILL overdue ones; True when none is left."""
        for replica in list(self.terminating):
            popen = replica.popen
            if popen is None or _exited(popen):
                if popen is not None:
                    log.info("%s stopped (exit %d)", replica.key,
                             podspec.exit_code(popen.returncode))
                    _remove_pid_file(self._pid_file(replica), popen.pid)
                self.terminating.remove(replica)
            elif not replica.killed and self._clock() >= (replica.stop_deadline or 0.0):
                log.warning("%s ignored SIGTERM for its grace period: SIGKILL", replica.key)
                _signal_group(popen.pid, signal.SIGKILL)
                replica.killed = True
        return not self.terminating

    def shutdown(self) -> None:
        """Stop every process as if its pod were deleted, and wait for all of them."""
        for uid in list(self.replicas):
            replica = self.replicas.pop(uid)
            self._terminate(replica, replica.pod)
        try:
            wait_for(self.reap, timeout=podspec.GRACE_CAP_SECONDS + 10, what="pod processes")
        except DeadlineExceeded:
            log.error("processes still running at exit: %s",
                      [r.key for r in self.terminating])

    def _pid_file(self, replica: Replica) -> Path:
        return self._options.log_dir / f"{replica.key}.pid"


# --- probes -----------------------------------------------------------------------------


def run_probe(probe: podspec.Probe, env: dict[str, str]) -> bool:
    """Perform one readiness check against 127.0.0.1 with the probe's (capped) timeout."""
    try:
        if probe.kind == "http":
            return _http_probe(probe)
        if probe.kind == "tcp":
            if probe.port is None:
                return False
            with socket.create_connection((probe.host, probe.port), timeout=probe.timeout):
                return True
        if probe.kind == "exec":
            result = subprocess.run(list(probe.command), env=env, timeout=probe.timeout,
                                    capture_output=True, check=False)
            return result.returncode == 0
    except (OSError, http.client.HTTPException, subprocess.TimeoutExpired):
        return False
    return False


def _http_probe(probe: podspec.Probe) -> bool:
    """A GET without following redirects (kubelet counts 3xx as success); no TLS verify."""
    if probe.port is None:
        return False
    connection: http.client.HTTPConnection
    if probe.scheme.upper() == "HTTPS":
        connection = http.client.HTTPSConnection(
            probe.host, probe.port, timeout=probe.timeout,
            context=ssl._create_unverified_context())  # kubelet skips verification too
    else:
        connection = http.client.HTTPConnection(probe.host, probe.port, timeout=probe.timeout)
    try:
        connection.request("GET", probe.path, headers=dict(probe.headers))
        return podspec.http_probe_passed(connection.getresponse().status)
    finally:
        connection.close()


# --- processes --------------------------------------------------------------------------


def _exited(popen: subprocess.Popen[bytes]) -> bool:
    """True once the process has exited, after SIGKILLing what is left of its group.

    When the main process ends the container ends, so its leftover children
    go too. The exit is seen without reaping (WNOWAIT): the zombie keeps the
    group id reserved, so the SIGKILL cannot reach a process that reused it.
    """
    if popen.returncode is not None:
        return True
    try:
        exited = os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # already reaped elsewhere
        exited = None
    if exited is not None:
        _signal_group(popen.pid, signal.SIGKILL)
    return popen.poll() is not None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal a process group; quietly nothing when it is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _process_start_ticks(pid: int) -> str | None:
    """The kernel's start time of ``pid``: with the pid it identifies a process uniquely."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _write_pid_file(path: Path, pid: int) -> None:
    path.write_text(f"{pid} {_process_start_ticks(pid) or ''}\n")


def _remove_pid_file(path: Path, pid: int) -> None:
    """Remove a pod's pid file if it still names ``pid`` (a same-named newer pod may own it)."""
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().split()[0]) == pid:
            path.unlink()


def stop_orphans(log_dir: Path) -> None:
    """Stop processes a previous runner left behind when it was killed without cleanup.

    A pid file names one only while the same process (pid and start time)
    still runs, so a reused pid is never signalled.
    """
    orphans: list[int] = []
    for pid_file in log_dir.glob("*.pid"):
        with contextlib.suppress(ValueError):
            pid_text, _, ticks = pid_file.read_text().strip().partition(" ")
            pid = int(pid_text)
            if pid_alive(pid) and ticks and _process_start_ticks(pid) == ticks:
                log.warning("stopping orphan %s (pid %d) of a previous runner", pid_file.stem, pid)
                _signal_group(pid, signal.SIGTERM)
                orphans.append(pid)
        pid_file.unlink(missing_ok=True)
    try:
        wait_for(lambda: not any(pid_alive(p) for p in orphans),
                 timeout=podspec.GRACE_CAP_SECONDS, what="orphaned pod processes")
    except DeadlineExceeded:
        for pid in orphans:
            _signal_group(pid, signal.SIGKILL)


# --- host facts -------------------------------------------------------------------------


def _now() -> str:
    return podspec.rfc3339(datetime.now(UTC))


def _image_env(pod_name: str) -> dict[str, str]:
    """What an image and the container runtime would provide (see the module docstring)."""
    venv_bin = str(Path(sys.executable).parent)
    return {"PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(Path.home()), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
            "HOSTNAME": pod_name}


def host_node(log_dir: Path) -> NodeInfo:
    """This host as a node: its allocatable resources are what unset limits resolve to."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return NodeInfo(name=socket.gethostname(), allocatable={
        "cpu": Fraction(os.cpu_count() or 1), "memory": Fraction(memory),
        "ephemeral-storage": Fraction(shutil.disk_usage(log_dir).total)})


def write_heartbeat(path: Path, runner: Runner, api_ok: bool) -> None:
    """Atomically record that the loop is alive (the component's health check reads it)."""
    payload = {"pid": os.getpid(), "time": _now(), "synced": runner.synced, "api_ok": api_ok,
               "pods": sorted(r.key for r in runner.replicas.values())}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(path)


# --- main -------------------------------------------------------------------------------


def serve(runner: Runner, stop: threading.Event, interval: float, heartbeat: Path) -> None:
    """Step until ``stop`` is set, then stop every process. A failing step never ends the loop:
    the children would be left without a supervisor."""
    try:
        while not stop.is_set():
            try:
                api_ok = runner.step()
            except Exception:
                log.exception("runner step failed; continuing")
                api_ok = False
            write_heartbeat(heartbeat, runner, api_ok)
            stop.wait(interval)
    finally:
        runner.shutdown()
        heartbeat.unlink(missing_ok=True)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--log-dir", type=Path, required=True)
    parser.add_argument("--selector", default=DEFAULT_SELECTOR)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--heartbeat", type=Path, help="default: LOG_DIR/runner.heartbeat")
    parser.add_argument("--entrypoint", default="spatialjoin",
                        help="what a container without command runs (the image ENTRYPOINT)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args.log_dir.mkdir(parents=True, exist_ok=True)
    heartbeat: Path = args.heartbeat or args.log_dir / "runner.heartbeat"
    heartbeat.parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received signal %d: stopping pod processes", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop_orphans(args.log_dir)
    options = Options(log_dir=args.log_dir, selector=args.selector,
                      entrypoint=tuple(args.entrypoint.split()))
    runner = Runner(Cluster(args.kubeconfig), options, host_node(args.log_dir))
    log.info("runner up: selector %r, logs in %s", args.selector, args.log_dir)
    serve(runner, stop, args.interval, heartbeat)
    log.info("runner stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
