"""The runner's kubelet decisions, table-driven: env, ports, probes, status, backoff."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from fractions import Fraction
from typing import Any

import pytest

from spatialjoin_devstack import podspec
from spatialjoin_devstack.podspec import (
    ContainerConfigError,
    ContainerView,
    EnvSources,
    NodeInfo,
    Probe,
    Termination,
)

pytestmark = pytest.mark.unit

NODE = NodeInfo(name="node-a", allocatable={"cpu": Fraction(4), "memory": Fraction(8 * 2**30)})
NOW = "2024-05-01T12:00:00Z"
EARLIER = "2024-05-01T11:00:00Z"


def _secret(**values: str) -> dict[str, Any]:
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


SOURCES = EnvSources(
    secrets={"db": _secret(password="pw", user="sj", **{"bad key": "x"})},
    config_maps={"cfg": {"data": {"LEVEL": "debug", "URL": "http://x"}}},
)


def _pod(container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "w-1", "namespace": "jobs", "uid": "u-1",
                     "labels": {"tier": "worker"}, "annotations": {"a": "b"}},
        "spec": {"containers": [{"name": "worker", **container}], **spec},
    }


def _secret_ref(name: str, key: str, optional: bool | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": name, "key": key}
    if optional is not None:
        ref["optional"] = optional
    return {"valueFrom": {"secretKeyRef": ref}}


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("plain", {}, "plain"),
    ("$(A)", {"A": "1"}, "1"),
    ("x-$(A)-$(B)", {"A": "1", "B": "2"}, "x-1-2"),
    ("$(MISSING)", {}, "$(MISSING)"),
    ("$$(A)", {"A": "1"}, "$(A)"),
    ("$$", {}, "$"),
    ("cost $5", {}, "cost $5"),
    ("trailing $", {}, "trailing $"),
    ("$(unclosed", {"unclosed": "no"}, "$(unclosed"),
    ("$()", {}, "$()"),
    ("$(A)$(A)", {"A": "ab"}, "abab"),
])
def test_expand(text: str, env: dict[str, str], expected: str) -> None:
    assert podspec.expand(text, env) == expected


@pytest.mark.parametrize(("container", "expected"), [
    ({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "$(A)-2"}]},
     {"A": "1", "B": "1-2"}),
    ({"env": [{"name": "B", "value": "$(A)"}, {"name": "A", "value": "1"}]},
     {"B": "$(A)", "A": "1"}),
    ({"env": [{"name": "EMPTY", "value": ""}]}, {"EMPTY": ""}),
    ({"env": [{"name": "P", **_secret_ref("db", "password")}]}, {"P": "pw"}),
    ({"env": [{"name": "P", **_secret_ref("gone", "password", optional=True)}]}, {}),
    ({"env": [{"name": "P", **_secret_ref("db", "nokey", optional=True)}]}, {}),
    ({"env": [{"name": "L", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "LEVEL"}}}]},
     {"L": "debug"}),
    ({"env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
              {"name": "S", "value": "pod=$(N)"}]}, {"N": "w-1", "S": "pod=w-1"}),
    ({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "user"}}},
              {"name": "Y", "value": "$(X)"}]}, {"X": "sj", "Y": "sj"}),
    ({"envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "APP_"}]},
     {"APP_LEVEL": "debug", "APP_URL": "http://x"}),
    ({"envFrom": [{"secretRef": {"name": "db"}}]}, {"password": "pw", "user": "sj"}),
    ({"envFrom": [{"secretRef": {"name": "gone", "optional": True}}]}, {}),
    ({"envFrom": [{"configMapRef": {"name": "cfg"}}], "env": [{"name": "LEVEL", "value": "info"}]},
     {"LEVEL": "info", "URL": "http://x"}),
    ({"envFrom": [{"configMapRef": {"name": "cfg"}}], "env": [{"name": "U", "value": "$(URL)/a"}]},
     {"LEVEL": "debug", "URL": "http://x", "U": "http://x/a"}),
])
def test_resolve_env(container: dict[str, Any], expected: dict[str, str]) -> None:
    pod = _pod(container)
    assert podspec.resolve_env(pod, podspec.first_container(pod), SOURCES, NODE) == expected


@pytest.mark.parametrize(("container", "message"), [
    ({"env": [{"name": "P", **_secret_ref("gone", "password")}]}, 'secret "gone" not found'),
    ({"env": [{"name": "P", **_secret_ref("db", "nokey")}]},
     "couldn't find key nokey in Secret jobs/db"),
    ({"env": [{"name": "P", **_secret_ref("db", "nokey", optional=False)}]},
     "couldn't find key nokey in Secret jobs/db"),
    ({"env": [{"name": "L", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "NO"}}}]},
     "couldn't find key NO in ConfigMap jobs/cfg"),
    ({"envFrom": [{"configMapRef": {"name": "nope"}}]}, 'configmap "nope" not found'),
    ({"env": [{"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]},
     "unsupported fieldRef"),
])
def test_resolve_env_errors(container: dict[str, Any], message: str) -> None:
    pod = _pod(container)
    with pytest.raises(ContainerConfigError, match=message):
        podspec.resolve_env(pod, podspec.first_container(pod), SOURCES, NODE)


def test_secret_bytes_survive_decoding() -> None:
    raw = b"\xff\x00ok"
    pod = _pod({"env": [{"name": "B", **_secret_ref("bin", "k")}]})
    sources = EnvSources(secrets={"bin": {"data": {"k": base64.b64encode(raw).decode()}}})
    value = podspec.resolve_env(pod, podspec.first_container(pod), sources, NODE)["B"]
    assert value.encode("utf-8", "surrogateescape") == raw


@pytest.mark.parametrize(("path", "expected"), [
    ("metadata.name", "w-1"),
    ("metadata.namespace", "jobs"),
    ("metadata.uid", "u-1"),
    ("metadata.labels['tier']", "worker"),
    ("metadata.labels['absent']", ""),
    ("metadata.annotations['a']", "b"),
    ("status.podIP", "127.0.0.1"),
    ("status.hostIP", "127.0.0.1"),
    ("status.podIPs", "127.0.0.1"),
    ("spec.nodeName", "node-a"),
    ("spec.serviceAccountName", ""),
])
def test_field_value(path: str, expected: str) -> None:
    assert podspec.field_value(_pod({}), path, NODE) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("1", Fraction(1)), ("500m", Fraction(1, 2)), ("2Gi", Fraction(2 * 2**30)),
    ("1.5", Fraction(3, 2)), ("1k", Fraction(1000)), ("1E", Fraction(10**18)),
    ("1e3", Fraction(1000)), ("128Mi", Fraction(128 * 2**20)), ("100n", Fraction(1, 10**7)),
])
def test_parse_quantity(text: str, expected: Fraction) -> None:
    assert podspec.parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "1Xi", "1.2.3"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ContainerConfigError):
        podspec.parse_quantity(text)


@pytest.mark.parametrize(("resources", "ref", "expected"), [
    ({"limits": {"memory": "4Gi"}}, {"resource": "limits.memory", "divisor": "1Mi"}, "4096"),
    ({"limits": {"cpu": "250m"}}, {"resource": "limits.cpu"}, "1"),
    ({"limits": {"cpu": "250m"}}, {"resource": "limits.cpu", "divisor": "1m"}, "250"),
    ({}, {"resource": "limits.cpu"}, "4"),
    ({}, {"resource": "limits.memory", "divisor": "1Gi"}, "8"),
    ({}, {"resource": "requests.memory"}, "0"),
    ({"requests": {"memory": "100M"}}, {"resource": "requests.memory", "divisor": "1Mi"}, "96"),
])
def test_resource_value(resources: dict[str, Any], ref: dict[str, Any], expected: str) -> None:
    pod = _pod({"resources": resources})
    assert podspec.resource_value(pod, podspec.first_container(pod), ref, NODE) == expected


@pytest.mark.parametrize(("container", "expected"), [
    ({}, (set(), set())),
    ({"envFrom": [{"secretRef": {"name": "s1"}}, {"configMapRef": {"name": "c1"}}],
      "env": [{"name": "A", **_secret_ref("s2", "k")},
              {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "c2", "key": "k"}}},
              {"name": "C", "value": "v"}]},
     ({"s1", "s2"}, {"c1", "c2"})),
])
def test_referenced_sources(container: dict[str, Any],
                            expected: tuple[set[str], set[str]]) -> None:
    assert podspec.referenced_sources(container) == expected


PORTS = {"ports": [{"name": "metrics", "containerPort": 9100}, {"containerPort": 8080},
                   {"name": "metrics-udp", "containerPort": 9100, "protocol": "UDP"}]}


def test_assign_ports_keeps_previous_and_allocates_the_rest() -> None:
    free = iter([50001, 50002])
    assigned = podspec.assign_ports(PORTS, {9100: 40000}, lambda: next(free))
    assert assigned == {9100: 40000, 8080: 50001}


@pytest.mark.parametrize(("annotation", "expected"), [
    (None, {}),
    ("not json", {}),
    ("[1]", {}),
    ('{"metrics": 40000, "8080": 40001}', {9100: 40000, 8080: 40001}),
    ('{"metrics": "40000", "8080": 70000}', {}),
])
def test_recorded_ports(annotation: str | None, expected: dict[int, int]) -> None:
    assert podspec.recorded_ports(PORTS, annotation) == expected


def test_ports_annotation_round_trips() -> None:
    assigned = {9100: 40000, 8080: 40001}
    annotation = podspec.ports_annotation(PORTS, assigned)
    assert annotation == {"metrics": 40000, "8080": 40001, "metrics-udp": 40000}
    assert podspec.recorded_ports(PORTS, json.dumps(annotation)) == assigned


@pytest.mark.parametrize(("port", "expected"), [
    ("metrics", 40000), (9100, 40000), (8080, 40001), (7000, 7000), ("nope", None),
])
def test_named_port(port: int | str, expected: int | None) -> None:
    assert podspec.named_port(PORTS, port, {9100: 40000, 8080: 40001}) == expected


@pytest.mark.parametrize(("env", "expected"), [
    ({}, {"SPATIALJOIN_WORKER_ID": "w-1", "SPATIALJOIN_METRICS_PORT": "40000",
          "SPATIALJOIN_METRICS_ADDR": "127.0.0.1"}),
    ({"SPATIALJOIN_WORKER_ID": "mine", "SPATIALJOIN_METRICS_PORT": "9100",
      "SPATIALJOIN_METRICS_ADDR": "0.0.0.0"},
     {"SPATIALJOIN_WORKER_ID": "mine", "SPATIALJOIN_METRICS_PORT": "40000",
      "SPATIALJOIN_METRICS_ADDR": "127.0.0.1"}),
])
def test_runner_env(env: dict[str, str], expected: dict[str, str]) -> None:
    pod = _pod(PORTS)
    assert podspec.runner_env(pod, podspec.first_container(pod), env, {9100: 40000}) == expected


def test_runner_env_without_metrics_port() -> None:
    pod = _pod({})
    assert podspec.runner_env(pod, podspec.first_container(pod), {}, {}) == {
        "SPATIALJOIN_WORKER_ID": "w-1"}


@pytest.mark.parametrize(("container", "expected"), [
    ({"command": ["spatialjoin", "worker", "run"]}, ["/venv/bin/spatialjoin", "worker", "run"]),
    ({"command": ["python", "-m", "x"], "args": ["--id=$(ID)", "$$(ID)"]},
     ["python", "-m", "x", "--id=w-1", "$(ID)"]),
    ({"args": ["worker", "--port", "$(PORT)"]},
     ["/venv/bin/spatialjoin", "worker", "--port", "40000"]),
    ({"command": ["$(MISSING)"]}, ["$(MISSING)"]),
])
def test_command_line(container: dict[str, Any], expected: list[str]) -> None:
    env = {"ID": "w-1", "PORT": "40000"}
    assert podspec.command_line(container, env, ("spatialjoin",),
                                "/venv/bin/spatialjoin") == expected


def test_command_line_needs_something_to_run() -> None:
    with pytest.raises(ContainerConfigError):
        podspec.command_line({}, {}, (), "/venv/bin/spatialjoin")


@pytest.mark.parametrize(("metadata", "spec", "expected"), [
    ({}, {}, 30.0),
    ({}, {"terminationGracePeriodSeconds": 5}, 5.0),
    ({}, {"terminationGracePeriodSeconds": 0}, 0.0),
    ({}, {"terminationGracePeriodSeconds": 600}, 30.0),
    ({"deletionGracePeriodSeconds": 2}, {"terminationGracePeriodSeconds": 20}, 2.0),
])
def test_grace_seconds(metadata: dict[str, Any], spec: dict[str, Any], expected: float) -> None:
    assert podspec.grace_seconds({"metadata": metadata, "spec": spec}) == expected


@pytest.mark.parametrize(("probe", "expected"), [
    (None, None),
    ({"httpGet": {"path": "/healthz", "port": "metrics"}},
     Probe("http", 40000, path="/healthz")),
    ({"httpGet": {"port": 9100, "scheme": "HTTPS",
                  "httpHeaders": [{"name": "X-A", "value": "1"}]},
      "timeoutSeconds": 5, "initialDelaySeconds": 3},
     Probe("http", 40000, scheme="HTTPS", headers=(("X-A", "1"),), timeout=1.0,
           initial_delay=3.0)),
    ({"httpGet": {"port": "undeclared"}}, Probe("http", None)),
    ({"tcpSocket": {"port": "metrics"}}, Probe("tcp", 40000)),
    ({"exec": {"command": ["true"]}}, Probe("exec", command=("true",))),
])
def test_readiness_probe(probe: dict[str, Any] | None, expected: Probe | None) -> None:
    container = {**PORTS, **({"readinessProbe": probe} if probe else {})}
    assert podspec.readiness_probe(container, {9100: 40000}) == expected


@pytest.mark.parametrize(("code", "passed"), [(199, False), (200, True), (302, True),
                                              (399, True), (404, False), (500, False)])
def test_http_probe_passed(code: int, passed: bool) -> None:
    assert podspec.http_probe_passed(code) is passed


@pytest.mark.parametrize(("failures", "delay"), [
    (0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (40, 30.0), (10_000, 30.0),
])
def test_restart_delay(failures: int, delay: float) -> None:
    assert podspec.restart_delay(failures) == delay
    assert podspec.restart_at(100.0, failures) == 100.0 + delay


@pytest.mark.parametrize(("previous", "ran_for", "expected"), [
    (0, 0.5, 1), (3, 10.0, 4), (7, 59.9, 8), (7, 60.0, 1), (7, 3600.0, 1),
])
def test_next_failure_count(previous: int, ran_for: float, expected: int) -> None:
    assert podspec.next_failure_count(previous, ran_for) == expected


@pytest.mark.parametrize(("returncode", "expected"), [(0, 0), (3, 3), (-9, 137), (-15, 143)])
def test_exit_code(returncode: int, expected: int) -> None:
    assert podspec.exit_code(returncode) == expected


RUNNING = ContainerView(name="worker", image="img", pid=42, running_since=EARLIER, ready=True)
BACKING_OFF = ContainerView(name="worker", image="img", restart_count=2,
                            waiting=("CrashLoopBackOff", "back-off 4s"),
                            last=Termination(1, EARLIER, NOW))
CREATING = ContainerView(name="worker", image="img")


@pytest.mark.parametrize(("view", "expected"), [
    (RUNNING, {"name": "worker", "image": "img", "imageID": "", "ready": True,
               "restartCount": 0, "started": True, "containerID": "local://42",
               "state": {"running": {"startedAt": EARLIER}}}),
    (BACKING_OFF, {"name": "worker", "image": "img", "imageID": "", "ready": False,
                   "restartCount": 2, "started": False,
                   "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 4s"}},
                   "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                                "startedAt": EARLIER, "finishedAt": NOW}}}),
    (CREATING, {"name": "worker", "image": "img", "imageID": "", "ready": False,
                "restartCount": 0, "started": False,
                "state": {"waiting": {"reason": "ContainerCreating"}}}),
])
def test_container_status(view: ContainerView, expected: dict[str, Any]) -> None:
    assert podspec.container_status(view) == expected


def _conditions(previous: list[dict[str, Any]], view: ContainerView) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["lastTransitionTime"])
            for c in podspec.pod_conditions(previous, view, NOW)}


@pytest.mark.parametrize(("previous", "view", "expected"), [
    ([], RUNNING, {"PodScheduled": ("True", NOW), "Initialized": ("True", NOW),
                   "ContainersReady": ("True", NOW), "Ready": ("True", NOW)}),
    ([{"type": "Ready", "status": "True", "lastTransitionTime": EARLIER},
      {"type": "PodScheduled", "status": "True", "lastTransitionTime": EARLIER}], RUNNING,
     {"PodScheduled": ("True", EARLIER), "Initialized": ("True", NOW),
      "ContainersReady": ("True", NOW), "Ready": ("True", EARLIER)}),
    ([{"type": "Ready", "status": "True", "lastTransitionTime": EARLIER}], BACKING_OFF,
     {"PodScheduled": ("True", NOW), "Initialized": ("True", NOW),
      "ContainersReady": ("False", NOW), "Ready": ("False", NOW)}),
])
def test_pod_conditions(previous: list[dict[str, Any]], view: ContainerView,
                        expected: dict[str, tuple[str, str]]) -> None:
    assert _conditions(previous, view) == expected


def test_unready_condition_says_why() -> None:
    ready = podspec.pod_conditions([], BACKING_OFF, NOW)[-1]
    assert ready == {"type": "Ready", "status": "False", "lastTransitionTime": NOW,
                     "reason": "ContainersNotReady",
                     "message": "containers with unready status: [worker]"}


@pytest.mark.parametrize(("view", "phase"), [
    (RUNNING, "Running"), (BACKING_OFF, "Running"), (CREATING, "Pending"),
])
def test_pod_status(view: ContainerView, phase: str) -> None:
    status = podspec.pod_status({}, view, EARLIER, NOW, NODE)
    assert status["phase"] == phase
    assert (status["podIP"], status["hostIP"], status["podIPs"]) == (
        "127.0.0.1", "127.0.0.1", [{"ip": "127.0.0.1"}])
    assert status["startTime"] == EARLIER
    assert status["containerStatuses"] == [podspec.container_status(view)]


@pytest.mark.parametrize(("desired", "observed", "differs"), [
    ({"a": 1}, {"a": 1, "extra": 2}, False),
    ({"a": 1}, {"a": 2}, True),
    ({"a": ""}, {}, False),
    ({"a": {}}, {"a": None}, False),
    ({"a": None}, {"a": "x"}, True),
    ({"ready": False}, {}, True),
    ({"ready": False}, {"ready": False}, False),
    ({"l": [{"x": 1}]}, {"l": [{"x": 1, "lastProbeTime": None}]}, False),
    ({"l": [{"x": 1}]}, {"l": [{"x": 1}, {"x": 2}]}, True),
    ({"l": []}, {}, False),
    ({"s": {"running": {"startedAt": NOW}}}, {"s": {"waiting": {"reason": "X"}}}, True),
])
def test_status_differs(desired: Any, observed: Any, differs: bool) -> None:
    assert podspec.status_differs(desired, observed) is differs


def test_reported_status_is_stable_against_what_the_apiserver_returns() -> None:
    """After a patch the apiserver adds defaults; the next loop must not patch again."""
    desired = podspec.pod_status({}, RUNNING, EARLIER, NOW, NODE)
    echoed = json.loads(json.dumps(desired))
    for condition in echoed["conditions"]:
        condition["lastProbeTime"] = None
    echoed["containerStatuses"][0]["lastState"] = {}
    echoed["qosClass"] = "BestEffort"
    later = podspec.pod_status(echoed, RUNNING, EARLIER, "2024-05-01T13:00:00Z", NODE)
    assert not podspec.status_differs(later, echoed)


@pytest.mark.parametrize(("moment", "expected"), [
    ("2024-05-01T12:00:00.900+00:00", "2024-05-01T12:00:00Z"),
    ("2024-05-01T14:00:00+02:00", "2024-05-01T12:00:00Z"),
])
def test_rfc3339(moment: str, expected: str) -> None:
    assert podspec.rfc3339(datetime.fromisoformat(moment)) == expected
