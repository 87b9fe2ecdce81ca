"""The chart, rendered: lint, Kubernetes schema validation, RBAC, security, peering, monitoring.

Pure: helm lint and helm template only, no cluster. Built-in kinds are validated
with kubernetes-validate (strict: unknown fields fail) against the oldest and
the newest Kubernetes schemas it ships; the stack's 1.20 apiserver validates
them for real in the integration tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from kubernetes_validate.utils import all_versions  # type: ignore[import-untyped]

from spatialjoin_contracts.crd_generate import rendered_crds
from spatialjoin_contracts.models.job import SlaSpec
from spatialjoin_contracts.models.pool import EscalationAction, P2Escalation, P3Escalation

from . import expected_rbac as rbac
from .helm import (
    ALL_OPTIONS,
    CHART,
    CLUSTERWIDE_HA,
    DEFAULT,
    STANDALONE,
    VARIANTS,
    Manifest,
    container,
    find,
    lint,
    one,
    template,
    template_error,
)

pytestmark = pytest.mark.unit

KUBERNETES_VERSIONS = sorted({all_versions()[0], kubernetes_validate.latest_version()})
THIRD_PARTY_KINDS = {"ServiceMonitor", "PrometheusRule", "ClusterKopfPeering", "KopfPeering"}
PATHS = {"P1": "GIS Data Stewards", "P2": "Data Architecture", "P3": "Platform Engineering"}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("values")


@pytest.fixture(scope="module")
def rendered(tmp: Path) -> dict[str, list[Manifest]]:
    """Each variant rendered once, CRDs included."""
    return {name: template(values, tmp, include_crds=True) for name, values in VARIANTS.items()}


# --- lint and values validation ---------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_passes(variant: str, tmp: Path) -> None:
    result = lint(VARIANTS[variant], tmp)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("values", "complaint"), [
    ({"replicas": 2}, "Additional property replicas"),
    ({"replicaCount": "two"}, "replicaCount"),
    ({"logLevel": "verbose"}, "logLevel"),
    ({"watch": {"namespaces": ["Not_A_Namespace"]}}, "namespaces"),
    ({"metrics": {"port": 70000}}, "port"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "interval"),
    ({"peering": {"enabled": False}, "replicaCount": 2}, "needs replicaCount 1"),
])
def test_bad_values_are_refused_with_the_field_named(values: dict[str, Any], complaint: str,
                                                     tmp: Path) -> None:
    assert complaint in template_error(values, tmp)


# --- every manifest is valid ------------------------------------------------------------


def _documents(rendered: dict[str, list[Manifest]]) -> Iterator[tuple[str, Manifest]]:
    for variant, manifests in sorted(rendered.items()):
        for manifest in manifests:
            yield variant, manifest


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_built_in_kinds_validate_strictly(rendered: dict[str, list[Manifest]],
                                          version: str) -> None:
    checked = 0
    for variant, manifest in _documents(rendered):
        if manifest["kind"] in THIRD_PARTY_KINDS:
            continue
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{variant}: {manifest['kind']} {manifest['metadata']['name']}: "
                        f"{exc.message} at {list(exc.path)}")
        checked += 1
    assert checked > 40


# The parts of prometheus-operator's CRDs the chart relies on.
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["spec"],
    "properties": {"spec": {
        "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
        "properties": {
            "jobLabel": {"type": "string"},
            "selector": {"type": "object", "required": ["matchLabels"]},
            "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                "any": {"type": "boolean"},
                "matchNames": {"type": "array", "items": {"type": "string"}, "minItems": 1}}},
            "endpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["port"], "additionalProperties": False,
                "properties": {
                    "port": {"type": "string"}, "path": {"type": "string"},
                    "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                    "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                    "relabelings": {"type": "array", "items": {
                        "type": "object", "required": ["targetLabel"]}}}}},
        }}},
}
PROMETHEUS_RULE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["spec"],
    "properties": {"spec": {
        "type": "object", "required": ["groups"], "additionalProperties": False,
        "properties": {"groups": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "rules"], "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "rules": {"type": "array", "items": {
                "type": "object", "required": ["alert", "expr", "labels", "annotations"],
                "additionalProperties": False,
                "properties": {
                    "alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"},
                    "expr": {"type": "string", "minLength": 1},
                    "for": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "required": ["summary", "description"],
                                    "additionalProperties": {"type": "string"}}}}}}}}}}},
}


def test_monitoring_objects_match_the_prometheus_operator_fields(
        rendered: dict[str, list[Manifest]]) -> None:
    monitors = find(rendered["all-options"], "ServiceMonitor")
    rules = find(rendered["all-options"], "PrometheusRule")
    assert len(monitors) == 2 and len(rules) == 1
    for manifest in monitors + find(rendered["clusterwide-ha"], "ServiceMonitor"):
        assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
        jsonschema.validate(manifest, SERVICE_MONITOR_SCHEMA)
    for manifest in rules + find(rendered["clusterwide-ha"], "PrometheusRule"):
        assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
        jsonschema.validate(manifest, PROMETHEUS_RULE_SCHEMA)


def test_peering_objects_are_kinds_the_chart_defines(rendered: dict[str, list[Manifest]]) -> None:
    crds = {(c["spec"]["group"], c["spec"]["names"]["kind"]): c["spec"]["scope"]
            for c in find(rendered["default"], "CustomResourceDefinition")}
    for variant, manifest in _documents(rendered):
        if manifest["kind"] in ("ClusterKopfPeering", "KopfPeering"):
            group = manifest["apiVersion"].split("/")[0]
            scope = crds[(group, manifest["kind"])]
            assert ("namespace" in manifest["metadata"]) == (scope == "Namespaced"), variant


def test_chart_crds_are_the_generated_ones_plus_kopf_peering() -> None:
    crds = CHART / "crds"
    generated = rendered_crds()
    assert sorted(p.name for p in crds.iterdir()) == sorted([*generated, "kopf-peerings.yaml"])
    root = CHART.parents[1] / "crds"
    for name, text in generated.items():
        assert (crds / name).read_text() == text == (root / name).read_text()
    kinds = {d["spec"]["names"]["kind"] for d in yaml.safe_load_all((crds / "kopf-peerings.yaml")
                                                                      .read_text())}
    assert kinds == {"ClusterKopfPeering", "KopfPeering"}


# --- the Deployment ---------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_operator_runs_hardened(rendered: dict[str, list[Manifest]], variant: str) -> None:
    deployment = one(rendered[variant], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod
    operator = container(rendered[variant])
    assert operator["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "runAsNonRoot": True, "privileged": False, "capabilities": {"drop": ["ALL"]}}
    assert operator["resources"]["requests"] and operator["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m["name"] for m in operator["volumeMounts"]}
    assert mounts == {"/tmp": "tmp"}, "only /tmp is writable"
    assert {v["name"]: v for v in pod["volumes"]}["tmp"]["emptyDir"]
    assert pod["serviceAccountName"] == one(rendered[variant], "ServiceAccount")["metadata"]["name"]


def _env(manifests: list[Manifest]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(manifests)["env"]}


def test_default_is_one_peering_pod_watching_every_namespace(
        rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["default"]
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    operator = container(manifests)
    assert operator["image"] == "spatialjoin-operator:0.1.0"
    assert operator["command"] == ["spatialjoin", "operator"]
    assert operator["args"] == ["--peering=spatialjoin", "--all-namespaces",
                                "--liveness=http://0.0.0.0:8080/healthz"]
    env = _env(manifests)
    assert env["SPATIALJOIN_OPERATOR_METRICS_PORT"] == "9090"
    assert env["SPATIALJOIN_OPERATOR_METRICS_ADDR"] == "0.0.0.0"
    assert env["SPATIALJOIN_OPERATOR_LOG_LEVEL"] == "INFO"
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert one(manifests, "ClusterKopfPeering", "spatialjoin")
    assert not find(manifests, "KopfPeering")
    assert {p["name"] for p in operator["ports"]} == {"metrics", "health"}
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert not find(manifests, "ServiceMonitor") and not find(manifests, "PrometheusRule")
    assert not [m for m in find(manifests, "ConfigMap") if "dashboard" in m["metadata"]["name"]]


def test_several_pods_peer_with_distinct_priorities(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["clusterwide-ha"]
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    operator = container(manifests)
    assert operator["command"][:2] == ["/bin/bash", "-c"]
    assert 'exec kopf run --module=spatialjoin_operator.main' in operator["command"][2]
    assert '--priority="$RANDOM"' in operator["command"][2]
    assert operator["args"][:2] == ["--peering=spatialjoin", "--all-namespaces"]
    assert one(manifests, "ClusterKopfPeering", "spatialjoin")


def test_all_options_reach_the_pod(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["all-options"]
    deployment = one(manifests, "Deployment", "sjo")
    pod = deployment["spec"]["template"]["spec"]
    operator = container(manifests)
    assert operator["image"] == "registry.example.internal/spatialjoin-operator:0.1.0"
    assert operator["imagePullPolicy"] == "Always"
    assert operator["args"] == ["--peering=sjo", "--namespace=team-a", "--namespace=team-b",
                                "--liveness=http://0.0.0.0:8081/healthz", "--verbose"]
    env = _env(manifests)
    assert env["SPATIALJOIN_OPERATOR_METRICS_PORT"] == "9100"
    assert env["SPATIALJOIN_OPERATOR_LOG_LEVEL"] == "DEBUG"
    assert env["SPATIALJOIN_OPERATOR_JOB_INTERVAL_S"] == "5"
    assert env["SPATIALJOIN_OPERATOR_POOL_INTERVAL_S"] == "15"
    assert env["SPATIALJOIN_OPERATOR_LATENCY_WINDOW_S"] == "600"
    assert env["SPATIALJOIN_OPERATOR_WORKER_IMAGE"] == "registry.example.internal/w:1"
    assert env["TZ"] == "UTC"
    assert pod["serviceAccountName"] == "sjo-operator"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints"):
        assert pod[key] == ALL_OPTIONS[key]
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "gis"
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"example.com/a": "b"}
    peerings = find(manifests, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert not find(manifests, "ClusterKopfPeering")


def test_standalone_and_metrics_off(tmp: Path, rendered: dict[str, list[Manifest]]) -> None:
    operator = container(rendered["standalone"])
    assert operator["command"] == ["spatialjoin", "operator"]
    assert operator["args"][:2] == ["--standalone", "--namespace=team-a"]
    assert not find(rendered["standalone"], "KopfPeering")
    role = one(rendered["standalone"], "Role")
    assert ("kopf.dev", "kopfpeerings") not in rbac.rendered_rules(role["rules"])
    manifests = template({"metrics": {"enabled": False}, "liveness": {"enabled": False}}, tmp)
    operator = container(manifests)
    assert _env(manifests)["SPATIALJOIN_OPERATOR_METRICS_PORT"] == "0"
    assert "ports" not in operator or not operator["ports"]
    assert "livenessProbe" not in operator
    assert not [a for a in operator["args"] if a.startswith("--liveness")]
    assert not find(manifests, "Service")


# --- RBAC -------------------------------------------------------------------------------


def _cluster_roles(manifests: list[Manifest]) -> dict[str, rbac.Rules]:
    return {m["metadata"]["name"]: rbac.rendered_rules(m["rules"])
            for m in find(manifests, "ClusterRole")}


def _check_bindings(manifests: list[Manifest], namespace: str, account: str) -> None:
    roles = {(m["kind"], m["metadata"]["name"], m["metadata"].get("namespace"))
             for m in find(manifests, "ClusterRole") + find(manifests, "Role")}
    bindings = find(manifests, "ClusterRoleBinding") + find(manifests, "RoleBinding")
    assert len(bindings) == len(roles)
    for binding in bindings:
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        assert (ref["kind"], ref["name"], scope) in roles
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account,
                                        "namespace": namespace}]


def test_rbac_clusterwide_is_exactly_what_the_operator_uses(
        rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["default"]
    assert not find(manifests, "Role")
    assert _cluster_roles(manifests) == {
        "spatialjoin-system-sj-spatialjoin-operator-framework":
            {**rbac.FRAMEWORK, **rbac.FRAMEWORK_CLUSTER_PEERING},
        "spatialjoin-system-sj-spatialjoin-operator": rbac.OPERATOR,
    }
    _check_bindings(manifests, "spatialjoin-system", "sj-spatialjoin-operator")


def test_rbac_namespaced_is_a_role_per_watched_namespace(
        rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["all-options"]
    assert _cluster_roles(manifests) == {
        "spatialjoin-system-sjo-framework": {**rbac.FRAMEWORK, **rbac.FRAMEWORK_NAMESPACED}}
    roles = find(manifests, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    with_api = {**rbac.OPERATOR, **rbac.API, **rbac.NAMESPACED_PEERING}  # api.enabled
    for role in roles:
        assert rbac.rendered_rules(role["rules"]) == with_api
    _check_bindings(manifests, "spatialjoin-system", "sjo-operator")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rbac_has_no_wildcards_and_never_lists_secrets(rendered: dict[str, list[Manifest]],
                                                       variant: str) -> None:
    for role in find(rendered[variant], "ClusterRole") + find(rendered[variant], "Role"):
        for (group, resource), verbs in rbac.rendered_rules(role["rules"]).items():
            assert "*" not in verbs and resource != "*" and group != "*"
            assert not verbs & {"escalate", "bind", "impersonate"}
            if resource == "secrets":
                assert verbs == {"get"}


def test_rbac_can_be_left_to_the_cluster_admin(tmp: Path) -> None:
    manifests = template({"rbac": {"create": False},
                          "serviceAccount": {"create": False, "name": "given"}}, tmp)
    kinds = {m["kind"] for m in manifests}
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding",
                        "ServiceAccount"}
    assert one(manifests, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == \
        "given"


# --- monitoring: alerts and the dashboard -----------------------------------------------


def exported_metric_names() -> set[str]:
    """Every series name the operator and the worker expose (as Prometheus sees them)."""
    from prometheus_client import REGISTRY

    import spatialjoin_operator.job_metrics
    import spatialjoin_operator.pool_metrics  # noqa: F401  (registers into REGISTRY)
    from spatialjoin_worker.metrics import WorkerMetrics

    names: set[str] = set()
    for registry in (REGISTRY, WorkerMetrics().registry):
        for family in registry.collect():
            if not family.name.startswith("spatialjoin_"):
                continue
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                        "gauge": ("",), "summary": ("_sum", "_count", "")}[family.type]
            names.update(family.name + suffix for suffix in suffixes)
    return names


METRIC = re.compile(r"\bspatialjoin_[a-z0-9_]+")


def _alerts(manifests: list[Manifest]) -> list[dict[str, Any]]:
    rule = one(manifests, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _dashboard(manifests: list[Manifest]) -> dict[str, Any]:
    (config_map,) = [m for m in find(manifests, "ConfigMap")
                     if m["metadata"]["name"].endswith("-dashboard")]
    return dict(json.loads(config_map["data"]["spatialjoin.json"]))


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_alerts_and_dashboard_use_only_metrics_that_exist(
        rendered: dict[str, list[Manifest]]) -> None:
    exported = exported_metric_names()
    manifests = rendered["all-options"]
    expressions = [a["expr"] for a in _alerts(manifests)]
    expressions += [t["expr"] for p in _panels(_dashboard(manifests)) for t in p["targets"]]
    used = {name for expr in expressions for name in METRIC.findall(expr)}
    assert used and not used - exported, f"unknown metrics: {sorted(used - exported)}"
    assert EscalationAction.STEP_DOWN.value in " ".join(expressions)


def test_alerts_mirror_the_escalation_ladder_and_the_sla(
        rendered: dict[str, list[Manifest]]) -> None:
    from spatialjoin_operator.pool_policy import ESCALATION_PATH

    assert {s.value: path for s, path in ESCALATION_PATH.items()} == PATHS
    alerts = {a["alert"]: a for a in _alerts(rendered["clusterwide-ha"])}
    assert {"SpatialJoinWorkerLatencyP3", "SpatialJoinConsumerLagP2",
            "SpatialJoinMaterializationFailureP1", "SpatialJoinSchemaDriftP1",
            "SpatialJoinJobSLABreached", "SpatialJoinOperatorDown"} <= set(alerts)
    for name, alert in alerts.items():
        labels = alert["labels"]
        if name == "SpatialJoinEscalationTaken":  # severity comes from the series
            assert "by (severity, action)" in alert["expr"]
            assert all(path in labels["escalation_path"] for path in PATHS.values())
            continue
        assert labels["severity"] in PATHS, name
        assert labels["escalation_path"] == PATHS[labels["severity"]], name
    # The thresholds default to the CRD's defaults.
    assert alerts["SpatialJoinWorkerLatencyP3"]["expr"].endswith(
        f"> {P3Escalation().latency_seconds:g}")
    assert alerts["SpatialJoinConsumerLagP2"]["expr"].endswith(
        f"> {P2Escalation().consumer_lag}")
    assert alerts["SpatialJoinJobDurationAboveSLA"]["expr"].endswith(
        f"> {SlaSpec().deadline_seconds}")
    assert alerts["SpatialJoinJobSLABreached"]["labels"]["severity"] == "P3"


def test_alert_labels_and_thresholds_are_configurable(rendered: dict[str, list[Manifest]],
                                                      tmp: Path) -> None:
    for alert in _alerts(rendered["all-options"]):
        assert alert["labels"]["team"] == "gis"
    manifests = template({"metrics": {"prometheusRule": {
        "enabled": True, "thresholds": {"workerLatencySeconds": 30, "consumerLag": 500,
                                        "slaSeconds": 120},
        "escalationPaths": {"P1": "Stewards", "P2": "Architects", "P3": "Platform"}}}}, tmp)
    alerts = {a["alert"]: a for a in _alerts(manifests)}
    assert alerts["SpatialJoinWorkerLatencyP3"]["expr"].endswith("> 30")
    assert alerts["SpatialJoinConsumerLagP2"]["expr"].endswith("> 500")
    assert alerts["SpatialJoinSchemaDriftP1"]["labels"]["escalation_path"] == "Stewards"
    assert "SpatialJoinOperatorDown" not in alerts  # no ServiceMonitor, no known job label


def test_dashboard_shows_what_the_issue_asks_for(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["all-options"]
    (config_map,) = [m for m in find(manifests, "ConfigMap")
                     if m["metadata"]["name"].endswith("-dashboard")]
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = _dashboard(manifests)
    text = {p["title"].lower(): " ".join(t["expr"] for t in p["targets"])
            for p in _panels(dashboard)}
    wanted = {"jobs by phase": "spatialjoin_operator_jobs",
              "sla breaches": "spatialjoin_operator_job_sla_breaches_total",
              "lag per partition": "spatialjoin_operator_pool_consumer_lag{",
              "p95": "quantile=\"0.95\"",
              "escalations": "spatialjoin_operator_escalations_total",
              "rows written": "spatialjoin_worker_rows_written_total",
              "bytes written": "spatialjoin_worker_bytes_written_total"}
    for topic, metric in wanted.items():
        assert any(topic in title and metric in expr for title, expr in text.items()), topic
    for panel in _panels(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_servicemonitors_select_the_operator_and_the_workers(
        rendered: dict[str, list[Manifest]]) -> None:
    from spatialjoin_operator import children

    namespaced = {m["metadata"]["name"]: m for m in find(rendered["all-options"],
                                                          "ServiceMonitor")}
    operator = namespaced["sjo"]
    (service,) = [s for s in find(rendered["all-options"], "Service")
                  if s["metadata"]["name"] == "sjo-metrics"]
    assert operator["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    assert operator["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    workers = namespaced["sjo-workers"]
    selector = workers["spec"]["selector"]["matchLabels"]
    pool_labels = children.labels("pool-a")
    assert selector.items() <= pool_labels.items()
    assert workers["spec"]["endpoints"][0]["port"] == children.METRICS_PORT_NAME
    assert workers["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    relabel = workers["spec"]["endpoints"][0]["relabelings"][0]
    sanitized = re.sub(r"[^a-zA-Z0-9_]", "_", children.POOL_LABEL)
    assert relabel == {"sourceLabels": [f"__meta_kubernetes_service_label_{sanitized}"],
                       "targetLabel": "pool"}
    clusterwide = {m["metadata"]["name"]: m for m in find(rendered["clusterwide-ha"],
                                                           "ServiceMonitor")}
    assert clusterwide["sj-spatialjoin-operator-workers"]["spec"]["namespaceSelector"] == \
        {"any": True}


def test_values_defaults_match_the_operator_settings() -> None:
    from spatialjoin_operator.settings import OperatorSettings

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    defaults = OperatorSettings.model_construct()
    assert values["operator"]["jobIntervalSeconds"] == defaults.job_interval_s
    assert values["operator"]["poolIntervalSeconds"] == defaults.pool_interval_s
    assert values["operator"]["latencyWindowSeconds"] == defaults.latency_window_s
    assert values["metrics"]["port"] == defaults.metrics_port
    assert values["logLevel"] == defaults.log_level
    assert DEFAULT == {} and STANDALONE["peering"] == {"enabled": False}
    assert CLUSTERWIDE_HA["replicaCount"] > 1
