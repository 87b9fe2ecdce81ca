"""The kubelet's decisions for one pod, as pure functions of plain dicts.

The local runner (:mod:`spatialjoin_devstack.runner`) stands in for the
kubelet on a cluster without nodes. Everything it decides (a container's
environment and command line, which local port stands for which container
port, the readiness probe target, the pod status it reports, when to restart
a crashed process) lives here, so it can be tested table-driven without an
apiserver. Objects are the JSON the apiserver sends (camelCase keys), e.g.
from ``ApiClient.sanitize_for_serialization`` or a raw response; nothing here
imports the kubernetes client.

The rules follow kubelet 1.20 (``pkg/kubelet/kubelet_pods.go`` and
``third_party/forked/golang/expansion``) so that a Deployment that works here
resolves the same way on a real node.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

Obj = Mapping[str, Any]

WORKER_SELECTOR = "app.kubernetes.io/part-of=spatialjoin,app.kubernetes.io/component=worker"
LOCAL_IP = "127.0.0.1"
METRICS_PORT_NAME = "metrics"
METRICS_PORT_ENV = "SPATIALJOIN_METRICS_PORT"
METRICS_ADDR_ENV = "SPATIALJOIN_METRICS_ADDR"
WORKER_ID_ENV = "SPATIALJOIN_WORKER_ID"
PORTS_ANNOTATION = "spatialjoin.io/local-ports"
GRACE_DEFAULT_SECONDS = 30.0
GRACE_CAP_SECONDS = 30.0
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0
PROBE_TIMEOUT_CAP_SECONDS = 1.0

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")  # 1.20's IsEnvVarName
_FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


class ContainerConfigError(Exception):
    """The container cannot be configured: a kubelet reports CreateContainerConfigError."""


# --- $(VAR) expansion -------------------------------------------------------------------


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` like the kubelet: unknown references and ``$(`` stay, ``$$`` is ``$``."""
    out: list[str] = []
    cursor = 0
    while cursor < len(text):
        char = text[cursor]
        if char != "$" or cursor + 1 == len(text):
            out.append(char)
            cursor += 1
            continue
        nxt = text[cursor + 1]
        close = text.find(")", cursor + 2) if nxt == "(" else -1
        if nxt == "$":
            out.append("$")
            cursor += 2
        elif close >= 0:
            name = text[cursor + 2 : close]
            out.append(env.get(name, f"$({name})"))
            cursor = close + 1
        else:  # "$(" without ")" or "$x": kept as written
            out.append("$" + nxt)
            cursor += 2
    return "".join(out)


# --- environment ------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    """What the host contributes: its name, IP and allocatable resources (limits default)."""

    name: str
    allocatable: Mapping[str, Fraction] = field(default_factory=dict)
    ip: str = LOCAL_IP


@dataclass(frozen=True)
class EnvSources:
    """The Secrets and ConfigMaps of the pod's namespace that the container refers to, by name.

    A name that is absent was not found (404); the resolver decides from the
    ``optional`` flag whether that is an error.
    """

    secrets: Mapping[str, Obj] = field(default_factory=dict)
    config_maps: Mapping[str, Obj] = field(default_factory=dict)


def first_container(pod: Obj) -> Obj:
    """The container the runner runs; worker pods have exactly one."""
    containers: Sequence[Obj] = pod["spec"]["containers"]
    return containers[0]


def referenced_sources(container: Obj) -> tuple[set[str], set[str]]:
    """Names of the (Secrets, ConfigMaps) the container's env needs, to fetch only those."""
    secrets: set[str] = set()
    config_maps: set[str] = set()
    for source in container.get("envFrom") or []:
        if source.get("secretRef"):
            secrets.add(source["secretRef"]["name"])
        if source.get("configMapRef"):
            config_maps.add(source["configMapRef"]["name"])
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        if value_from.get("secretKeyRef"):
            secrets.add(value_from["secretKeyRef"]["name"])
        if value_from.get("configMapKeyRef"):
            config_maps.add(value_from["configMapKeyRef"]["name"])
    return secrets, config_maps


def resolve_env(pod: Obj, container: Obj, sources: EnvSources, node: NodeInfo) -> dict[str, str]:
    """The container's environment in kubelet order: envFrom first, then env[] in order.

    ``env[].value`` is expanded against the variables defined before it;
    values from references are taken literally.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        env.update(_env_from(pod, source, sources))
    for var in container.get("env") or []:
        value = _env_var(pod, container, var, env, sources, node)
        if value is not None:
            env[var["name"]] = value
    return env


def _env_from(pod: Obj, source: Obj, sources: EnvSources) -> dict[str, str]:
    """One envFrom entry; keys that are not valid variable names are skipped, as by kubelet."""
    prefix = source.get("prefix") or ""
    if source.get("secretRef"):
        ref, kind, objects = source["secretRef"], "Secret", sources.secrets
    else:
        ref, kind, objects = source["configMapRef"], "ConfigMap", sources.config_maps
    obj = objects.get(ref["name"])
    if obj is None:
        if ref.get("optional"):
            return {}
        raise ContainerConfigError(f'{kind.lower()} "{ref["name"]}" not found')
    data = _decoded_data(obj, kind)
    named = {prefix + key: value for key, value in data.items()}
    return {key: value for key, value in named.items() if _ENV_NAME.match(key)}


def _env_var(pod: Obj, container: Obj, var: Obj, env: Mapping[str, str], sources: EnvSources,
             node: NodeInfo) -> str | None:
    """One env[] entry's value; None when an optional reference is missing (unset)."""
    if var.get("value"):
        return expand(var["value"], env)
    value_from = var.get("valueFrom")
    if not value_from:
        return ""
    if value_from.get("fieldRef"):
        return field_value(pod, value_from["fieldRef"]["fieldPath"], node)
    if value_from.get("resourceFieldRef"):
        return resource_value(pod, container, value_from["resourceFieldRef"], node)
    if value_from.get("secretKeyRef"):
        return _key_ref(pod, value_from["secretKeyRef"], "Secret", sources.secrets)
    if value_from.get("configMapKeyRef"):
        return _key_ref(pod, value_from["configMapKeyRef"], "ConfigMap", sources.config_maps)
    raise ContainerConfigError(f"env {var['name']}: unsupported valueFrom {sorted(value_from)}")


def _key_ref(pod: Obj, ref: Obj, kind: str, objects: Mapping[str, Obj]) -> str | None:
    """A secretKeyRef/configMapKeyRef value, honouring ``optional`` for object and key."""
    optional = bool(ref.get("optional"))
    obj = objects.get(ref["name"])
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(f'{kind.lower()} "{ref["name"]}" not found')
    data = _decoded_data(obj, kind)
    if ref["key"] in data:
        return data[ref["key"]]
    if optional:
        return None
    where = f"{pod['metadata'].get('namespace', 'default')}/{ref['name']}"
    raise ContainerConfigError(f"couldn't find key {ref['key']} in {kind} {where}")


def _decoded_data(obj: Obj, kind: str) -> dict[str, str]:
    """A Secret's data base64-decoded (bytes kept via surrogateescape), or a ConfigMap's data."""
    data: Mapping[str, str] = obj.get("data") or {}
    if kind != "Secret":
        return dict(data)
    return {k: base64.b64decode(v).decode("utf-8", "surrogateescape") for k, v in data.items()}


def field_value(pod: Obj, path: str, node: NodeInfo) -> str:
    """A downward-API fieldRef value as the kubelet resolves it for env."""
    metadata, spec = pod["metadata"], pod.get("spec") or {}
    simple: dict[str, str] = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", "default"),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName") or node.name,
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": node.ip,
        "status.podIP": node.ip,
        "status.podIPs": node.ip,
    }
    if path in simple:
        return simple[path]
    keyed = _FIELD_KEY.match(path)
    if keyed:
        return str((metadata.get(keyed.group(1)) or {}).get(keyed.group(2), ""))
    raise ContainerConfigError(f"unsupported fieldRef fieldPath {path!r}")


def parse_quantity(text: str) -> Fraction:
    """A Kubernetes resource quantity ("500m", "4Gi", "1e3") as an exact number."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ContainerConfigError(f"invalid quantity {text!r}")
    number, suffix = Fraction(match.group(1)), match.group(2) or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    exponent = int(suffix[1:]) if suffix[:1] in ("e", "E") and len(suffix) > 1 else _DECIMAL[suffix]
    return number * Fraction(10) ** exponent


def resource_value(pod: Obj, container: Obj, ref: Obj, node: NodeInfo) -> str:
    """A resourceFieldRef value: limits default to the node's allocatable, rounded up."""
    target = _container_named(pod, ref.get("containerName")) or container
    kind, _, resource = str(ref["resource"]).partition(".")
    declared = ((target.get("resources") or {}).get(kind) or {}).get(resource)
    if declared is not None:
        amount = parse_quantity(str(declared))
    elif kind == "limits" and resource in node.allocatable:
        amount = node.allocatable[resource]
    elif kind == "requests":
        amount = Fraction(0)
    else:
        raise ContainerConfigError(f"unsupported resourceFieldRef {ref['resource']!r}")
    divisor = parse_quantity(str(ref.get("divisor") or "1")) or Fraction(1)
    if resource == "cpu":  # kubelet divides milli-values, each rounded up
        return str(math.ceil(Fraction(math.ceil(amount * 1000), math.ceil(divisor * 1000))))
    return str(math.ceil(Fraction(math.ceil(amount), math.ceil(divisor))))


def _container_named(pod: Obj, name: str | None) -> Obj | None:
    containers: Sequence[Obj] = pod["spec"]["containers"]
    return next((c for c in containers if name and c.get("name") == name), None)


# --- ports, the runner's own env, command line ------------------------------------------


def assign_ports(container: Obj, previous: Mapping[int, int],
                 allocate: Callable[[], int]) -> dict[int, int]:
    """containerPort -> local port; kept across restarts so the pod's ports stay stable."""
    declared = [int(p["containerPort"]) for p in container.get("ports") or []]
    return {port: previous.get(port) or allocate() for port in dict.fromkeys(declared)}


def recorded_ports(container: Obj, annotation: str | None) -> dict[int, int]:
    """containerPort -> local port from a ``spatialjoin.io/local-ports`` annotation.

    A restarted runner reuses them, so a pod keeps its ports; anything
    unreadable simply means new ports.
    """
    try:
        recorded = json.loads(annotation or "{}")
    except ValueError:
        return {}
    if not isinstance(recorded, dict):
        return {}
    ports = ((int(p["containerPort"]), recorded.get(str(p.get("name") or p["containerPort"])))
             for p in container.get("ports") or [])
    return {number: local for number, local in ports
            if isinstance(local, int) and 0 < local < 65536}


def ports_annotation(container: Obj, assigned: Mapping[int, int]) -> dict[str, int]:
    """The ``spatialjoin.io/local-ports`` map: port name (or number) -> local port."""
    return {str(p.get("name") or p["containerPort"]): assigned[int(p["containerPort"])]
            for p in container.get("ports") or [] if int(p["containerPort"]) in assigned}


def named_port(container: Obj, port: int | str, assigned: Mapping[int, int]) -> int | None:
    """The local port that stands for a probe's port (a name or a containerPort number)."""
    if isinstance(port, str) and not port.isdigit():
        numbers = [int(p["containerPort"]) for p in container.get("ports") or []
                   if p.get("name") == port]
        return assigned.get(numbers[0]) if numbers else None
    return assigned.get(int(port), int(port))


def runner_env(pod: Obj, container: Obj, env: Mapping[str, str],
               assigned: Mapping[int, int]) -> dict[str, str]:
    """The pod's env plus the runner's additions: worker id and the local metrics port.

    A pod binds its metrics port on all of the pod's addresses; here every
    replica shares the host, so it gets a loopback address and its own port.
    """
    result = dict(env)
    result.setdefault(WORKER_ID_ENV, pod["metadata"]["name"])
    metrics = named_port(container, METRICS_PORT_NAME, assigned)
    if metrics is not None:
        result[METRICS_PORT_ENV] = str(metrics)
        result[METRICS_ADDR_ENV] = LOCAL_IP
    return result


def command_line(container: Obj, env: Mapping[str, str], entrypoint: Sequence[str],
                 spatialjoin: str) -> list[str]:
    """command + args expanded; no command means the image entrypoint (``entrypoint``)."""
    command = [expand(part, env) for part in container.get("command") or []] or list(entrypoint)
    argv = command + [expand(arg, env) for arg in container.get("args") or []]
    if not argv:
        raise ContainerConfigError("no command, no args and no entrypoint to run")
    if argv[0] == "spatialjoin":
        argv[0] = spatialjoin
    return argv


def grace_seconds(pod: Obj) -> float:
    """How long SIGTERM gets before SIGKILL: the deletion's grace, else the spec's, capped."""
    deletion = pod["metadata"].get("deletionGracePeriodSeconds")
    spec = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    chosen = next((v for v in (deletion, spec) if v is not None), GRACE_DEFAULT_SECONDS)
    return float(min(max(float(chosen), 0.0), GRACE_CAP_SECONDS))


# --- readiness probe --------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """A readiness check the runner can perform on 127.0.0.1."""

    kind: str  # "http", "tcp" or "exec"
    port: int | None = None  # None: a named port the container does not declare (fails)
    host: str = LOCAL_IP
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    timeout: float = PROBE_TIMEOUT_CAP_SECONDS
    initial_delay: float = 0.0


def readiness_probe(container: Obj, assigned: Mapping[int, int]) -> Probe | None:
    """The container's readinessProbe mapped onto local ports; None when it has none."""
    spec = container.get("readinessProbe")
    if not spec:
        return None
    timing = Probe("none", timeout=min(float(spec.get("timeoutSeconds") or 1),
                                       PROBE_TIMEOUT_CAP_SECONDS),
                   initial_delay=float(spec.get("initialDelaySeconds") or 0))
    if spec.get("httpGet"):
        get = spec["httpGet"]
        headers = tuple((h["name"], h["value"]) for h in get.get("httpHeaders") or [])
        return replace(timing, kind="http", port=named_port(container, get["port"], assigned),
                       host=get.get("host") or LOCAL_IP, path=get.get("path") or "/",
                       scheme=get.get("scheme") or "HTTP", headers=headers)
    if spec.get("tcpSocket"):
        sock = spec["tcpSocket"]
        return replace(timing, kind="tcp", port=named_port(container, sock["port"], assigned),
                       host=sock.get("host") or LOCAL_IP)
    if spec.get("exec"):
        return replace(timing, kind="exec", command=tuple(spec["exec"].get("command") or []))
    return None


def http_probe_passed(status_code: int) -> bool:
    """Kubelet counts 2xx and 3xx (redirects not followed off-host) as success."""
    return 200 <= status_code < 400


# --- restarts ---------------------------------------------------------------------------


def next_failure_count(previous: int, ran_for: float) -> int:
    """Consecutive failures: a run longer than twice the cap resets the backoff (as kubelet)."""
    return 1 if ran_for >= 2 * BACKOFF_CAP_SECONDS else previous + 1


def restart_delay(failures: int) -> float:
    """1 s after the first failure, doubling, capped at 30 s."""
    if failures <= 0:
        return 0.0
    return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * float(2 ** min(failures - 1, 32)))


def restart_at(exited_at: float, failures: int) -> float:
    """When the crashed container may start again (same clock as ``exited_at``)."""
    return exited_at + restart_delay(failures)


def exit_code(returncode: int) -> int:
    """Popen's negative signal numbers as the 128+N exit codes a runtime reports."""
    return 128 - returncode if returncode < 0 else returncode


# --- status -----------------------------------------------------------------------------


def rfc3339(moment: datetime) -> str:
    """The apiserver's timestamp format (second precision, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Termination:
    """A finished run of the container (``lastState.terminated``)."""

    exit_code: int
    started_at: str
    finished_at: str


@dataclass(frozen=True)
class ContainerView:
    """What the runner knows about the pod's container at one moment."""

    name: str
    image: str
    pid: int | None = None  # set while the process runs
    running_since: str | None = None
    ready: bool = False
    restart_count: int = 0
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    last: Termination | None = None


def container_status(view: ContainerView) -> dict[str, Any]:
    """A containerStatuses[] entry; ``containerID`` is ``local://PID`` while running."""
    status: dict[str, Any] = {
        "name": view.name, "image": view.image, "imageID": "", "ready": view.ready,
        "restartCount": view.restart_count, "started": view.pid is not None,
    }
    if view.pid is not None:
        status["containerID"] = f"local://{view.pid}"
        status["state"] = {"running": {"startedAt": view.running_since}}
    else:
        reason, message = view.waiting or ("ContainerCreating", "")
        status["state"] = {"waiting": _without_empty({"reason": reason, "message": message})}
    if view.last is not None:
        status["lastState"] = {"terminated": {
            "exitCode": view.last.exit_code, "reason": "Completed" if not view.last.exit_code
            else "Error", "startedAt": view.last.started_at, "finishedAt": view.last.finished_at}}
    return status


def pod_conditions(
    previous: Sequence[Obj], container: ContainerView, now: str
) -> list[dict[str, Any]]:
    """The four pod conditions; lastTransitionTime only moves when a status flips."""
    ready = container.ready
    unready = "" if ready else f"containers with unready status: [{container.name}]"
    wanted = [("PodScheduled", True, ""), ("Initialized", True, ""),
              ("ContainersReady", ready, unready), ("Ready", ready, unready)]
    before = {c.get("type"): c for c in previous}
    conditions = []
    for kind, ok, message in wanted:
        status = "True" if ok else "False"
        old = before.get(kind) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status else None
        conditions.append(_without_empty({
            "type": kind, "status": status, "lastTransitionTime": since or now,
            "reason": "" if ok else "ContainersNotReady", "message": message}))
    return conditions


def pod_status(previous: Obj, container: ContainerView, start_time: str, now: str,
               node: NodeInfo) -> dict[str, Any]:
    """The status a kubelet would report for a one-container pod with restartPolicy Always.

    Running once the container has run (even while it waits in
    CrashLoopBackOff), Pending before.
    """
    has_run = container.pid is not None or container.last is not None
    return {
        "phase": "Running" if has_run else "Pending",
        "hostIP": node.ip, "podIP": node.ip, "podIPs": [{"ip": node.ip}],
        "startTime": start_time,
        "conditions": pod_conditions(previous.get("conditions") or [], container, now),
        "containerStatuses": [container_status(container)],
    }


def status_differs(desired: Any, observed: Any) -> bool:
    """True when ``observed`` lacks something in ``desired``; absent equals empty or null.

    The apiserver adds defaults (``lastProbeTime: null``, ``lastState: {}``)
    and drops empty strings, so a plain ``!=`` would patch on every loop.
    """
    if isinstance(desired, Mapping):
        seen = observed if isinstance(observed, Mapping) else {}
        return any(status_differs(v, seen.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        seen_list = observed if isinstance(observed, list) else []
        return len(desired) != len(seen_list) or any(
            status_differs(d, o) for d, o in zip(desired, seen_list, strict=True))
    if desired in (None, "", {}, []):
        return observed not in (None, "", {}, [])
    return bool(desired != observed)


def _without_empty(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in ("", None)}
