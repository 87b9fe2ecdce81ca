"""The objects a WorkerPool owns, as pure builders of plain manifests (camelCase dicts).

Deployment of the workers, ConfigMap (partition map and query settings),
headless metrics Service, PodDisruptionBudget. The handler adds the owner
reference and applies them server-side with the operator's field manager;
nothing here talks to the apiserver.

Memory: a worker fails the task that pushes its resident set past
``maxHeapMb`` (its HeapGuard), so the container's limit sits a little above
(``memory_limit_mb``): the worker's own check trips before the kernel's OOM
killer. How many tasks a heap carries is the per-task estimate in pool_rules.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from spatialjoin_contracts.models import ContractVersion, WorkerPoolSpec

from .pool_policy import Effective

WORKER_CONTAINER: Final = "worker"
METRICS_PORT: Final = 9108
METRICS_PORT_NAME: Final = "metrics"
CONFIG_MOUNT: Final = "/etc/spatialjoin"
PARTITION_MAP_KEY: Final = "partition-map.json"
RUN_AS: Final = 10001

PART_OF: Final = "app.kubernetes.io/part-of"
COMPONENT: Final = "app.kubernetes.io/component"
INSTANCE: Final = "app.kubernetes.io/instance"
POOL_LABEL: Final = "spatialjoin.io/pool"
SPEC_HASH: Final = "spatialjoin.io/spec-hash"
CONFIG_HASH: Final = "spatialjoin.io/config-hash"
APPLIED_HASH: Final = "spatialjoin.io/applied-hash"
EFFECTIVE_CONCURRENCY: Final = "spatialjoin.io/effective-concurrency"
ACTIVE_CONTRACT: Final = "spatialjoin.io/active-contract"

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class QuerySettings:
    """Worker query settings the spec has no field for; they go into the ConfigMap."""

    statement_timeout_s: int = 300
    invalid_geometry_policy: str = "make-valid"
    log_level: str = "INFO"


@dataclass(frozen=True)
class ChildNames:
    deployment: str
    config_map: str
    service: str
    pod_disruption_budget: str


def fit_name(base: str, suffix: str = "", limit: int = 253, *, dns1035: bool = False) -> str:
    """``base + suffix``, shortened with a hash of ``base`` when over ``limit``.

    ``dns1035`` (Service names): no dots, a letter first, at most 63 characters.
    """
    name = base + suffix
    if dns1035:
        name = name.replace(".", "-")
        if not name[:1].isalpha():
            name = "sj-" + name
    if len(name) <= limit and (not dns1035 or _DNS1035.match(name)):
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 1
    return f"{name[:keep].rstrip('-.')}-{digest}{suffix}"


def child_names(pool: str) -> ChildNames:
    return ChildNames(deployment=fit_name(pool, "-workers"), config_map=fit_name(pool, "-config"),
                      service=fit_name(pool, "-metrics", 63, dns1035=True),
                      pod_disruption_budget=fit_name(pool, "-workers"))


def selector_labels(pool: str) -> dict[str, str]:
    """What the Deployment, Service and PDB select on; the local runner needs the first two."""
    return {PART_OF: "spatialjoin", COMPONENT: "worker", POOL_LABEL: fit_name(pool, "", 63)}


def labels(pool: str) -> dict[str, str]:
    return {**selector_labels(pool), "app.kubernetes.io/name": "spatialjoin-worker",
            INSTANCE: fit_name(pool, "", 63),
            "app.kubernetes.io/managed-by": "spatialjoin-operator"}


def selector_string(pool: str) -> str:
    """The label selector as text (status.selector, the scale subresource)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(pool).items()))


def consumer_group(spec: WorkerPoolSpec, namespace: str, pool: str) -> str:
    return spec.broker.consumer_group or f"spatialjoin.{namespace}.{pool}"


def worker_id_pattern(namespace: str, pool: str) -> str:
    """A POSIX regex for the worker ids of this pool's pods (``NAMESPACE/POD``).

    Pods of a Deployment are named ``DEPLOYMENT-<template hash>-<5 chars>``.
    """
    deployment_name = re.escape(child_names(pool).deployment)
    return f"^{re.escape(namespace)}/{deployment_name}-[a-z0-9]+-[a-z0-9]{{5}}$"


def memory_limit_mb(max_heap_mb: int) -> int:
    """maxHeapMb plus 1/8 (at least 128 MiB) of headroom for the interpreter between checks."""
    return max_heap_mb + max(128, max_heap_mb // 8)


def content_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def spec_hash(spec: WorkerPoolSpec) -> str:
    """What rolls the workers: the spec without replicas and escalation (the operator's knobs)."""
    return content_hash(spec.model_dump(mode="json", by_alias=True,
                                        exclude={"replicas", "escalation"}))


def config_map(pool: str, namespace: str, spec: WorkerPoolSpec,
               query: QuerySettings = QuerySettings()) -> dict[str, Any]:
    partition_map = [entry.to_k8s() for entry in spec.partition_map]
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": child_names(pool).config_map, "namespace": namespace,
                     "labels": labels(pool)},
        "data": {
            PARTITION_MAP_KEY: json.dumps(partition_map, sort_keys=True, indent=1),
            "SPATIALJOIN_STATEMENT_TIMEOUT_S": str(query.statement_timeout_s),
            "SPATIALJOIN_INVALID_GEOMETRY_POLICY": query.invalid_geometry_policy,
            "SPATIALJOIN_LOG_LEVEL": query.log_level,
        },
    }


def deployment(pool: str, namespace: str, spec: WorkerPoolSpec, effective: Effective, *,
               config_hash: str, image: str | None = None) -> dict[str, Any]:
    """The workers: env from the spec and the effective values, hardened, probed."""
    names = child_names(pool)
    template_annotations = {SPEC_HASH: spec_hash(spec), CONFIG_HASH: config_hash,
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(METRICS_PORT)}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": names.deployment, "namespace": namespace, "labels": labels(pool),
                     "annotations": {EFFECTIVE_CONCURRENCY: str(effective.concurrency),
                                     ACTIVE_CONTRACT: effective.contract.value}},
        "spec": {
            "replicas": effective.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector_labels(pool)},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels(pool), "annotations": template_annotations},
                "spec": _pod_spec(pool, namespace, spec, effective, image or spec.image),
            },
        },
    }


def _pod_spec(pool: str, namespace: str, spec: WorkerPoolSpec, effective: Effective,
              image: str) -> dict[str, Any]:
    memory = f"{memory_limit_mb(spec.max_heap_mb)}Mi"
    probe = {"httpGet": {"path": "/metrics", "port": METRICS_PORT_NAME, "scheme": "HTTP"},
             "timeoutSeconds": 2}
    return {
        "terminationGracePeriodSeconds": 60,
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                            "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": WORKER_CONTAINER, "image": image,
            "imagePullPolicy": spec.image_pull_policy.value,
            "command": ["spatialjoin", "worker"],
            "ports": [{"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT,
                       "protocol": "TCP"}],
            "env": worker_env(pool, namespace, spec, effective),
            "resources": {"requests": {"cpu": "250m", "memory": memory},
                          "limits": {"memory": memory}},
            "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
            "livenessProbe": {**probe, "initialDelaySeconds": 10, "periodSeconds": 10,
                              "failureThreshold": 6},
            "securityContext": {"allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                             {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True}],
        }],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            {"name": "config", "configMap": {"name": child_names(pool).config_map,
                                             "items": [{"key": PARTITION_MAP_KEY,
                                                        "path": PARTITION_MAP_KEY}]}},
        ],
    }


def worker_env(pool: str, namespace: str, spec: WorkerPoolSpec,
               effective: Effective) -> list[dict[str, Any]]:
    """The worker's SPATIALJOIN_* settings (worker/spatialjoin_worker/settings.py)."""
    broker, storage = spec.broker, spec.storage
    config = child_names(pool).config_map

    def value(name: str, text: str) -> dict[str, Any]:
        return {"name": name, "value": text}

    def secret(name: str, ref: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref, "key": key}}}

    def from_config(name: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"configMapKeyRef": {"name": config, "key": name}}}

    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        value("SPATIALJOIN_WORKER_ID", "$(POD_NAMESPACE)/$(POD_NAME)"),
        value("SPATIALJOIN_KAFKA_BOOTSTRAP", broker.bootstrap_servers),
        value("SPATIALJOIN_TOPIC", broker.topic),
        value("SPATIALJOIN_DEAD_LETTER_TOPIC", broker.dead_letter_topic),
        value("SPATIALJOIN_CONSUMER_GROUP", consumer_group(spec, namespace, pool)),
        secret("SPATIALJOIN_DATABASE_URL", spec.database.url_secret_ref.name,
               spec.database.url_secret_ref.key),
        secret("AWS_ACCESS_KEY_ID", storage.secret_ref.name, "AWS_ACCESS_KEY_ID"),
        secret("AWS_SECRET_ACCESS_KEY", storage.secret_ref.name, "AWS_SECRET_ACCESS_KEY"),
        *([value("SPATIALJOIN_S3_ENDPOINT", storage.endpoint)] if storage.endpoint else []),
        value("SPATIALJOIN_S3_REGION", storage.region),
        value("SPATIALJOIN_CONCURRENCY", str(effective.concurrency)),
        value("SPATIALJOIN_MAX_HEAP_MB", str(spec.max_heap_mb)),
        value("SPATIALJOIN_ENGINE", spec.engine.value),
        value("SPATIALJOIN_ACTIVE_CONTRACT", effective.contract.value),
        value("SPATIALJOIN_METRICS_PORT", str(METRICS_PORT)),
        value("SPATIALJOIN_METRICS_ADDR", "0.0.0.0"),
        from_config("SPATIALJOIN_STATEMENT_TIMEOUT_S"),
        from_config("SPATIALJOIN_INVALID_GEOMETRY_POLICY"),
        from_config("SPATIALJOIN_LOG_LEVEL"),
        # Resident memory proportional to live data, which is what the heap cap measures
        # (the worker also sets both itself: spatialjoin_worker.memory.tune_allocators).
        value("MALLOC_ARENA_MAX", "2"),
        value("ARROW_DEFAULT_MEMORY_POOL", "system"),
    ]


def service(pool: str, namespace: str) -> dict[str, Any]:
    """Headless, so that Prometheus (or anyone) reaches every worker's /metrics."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": child_names(pool).service, "namespace": namespace,
                     "labels": labels(pool)},
        "spec": {"clusterIP": "None", "selector": selector_labels(pool),
                 "ports": [{"name": METRICS_PORT_NAME, "port": METRICS_PORT,
                            "targetPort": METRICS_PORT_NAME, "protocol": "TCP"}]},
    }


def pod_disruption_budget(pool: str, namespace: str,
                          api_version: str = "policy/v1") -> dict[str, Any]:
    """One worker at a time may be evicted (maxUnavailable works at any replica count)."""
    return {
        "apiVersion": api_version, "kind": "PodDisruptionBudget",
        "metadata": {"name": child_names(pool).pod_disruption_budget, "namespace": namespace,
                     "labels": labels(pool)},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(pool)}},
    }


def with_applied_hash(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest with a hash of itself in an annotation: applying again only when it moves."""
    body: dict[str, Any] = json.loads(json.dumps(manifest))
    body["metadata"].setdefault("annotations", {})[APPLIED_HASH] = content_hash(manifest)
    return body


def effective_from_deployment(live: Mapping[str, Any] | None) -> Effective | None:
    """The values in force, read back from the live Deployment the operator applied."""
    if not live:
        return None
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    try:
        return Effective(replicas=int((live.get("spec") or {}).get("replicas", 0)),
                         concurrency=int(annotations[EFFECTIVE_CONCURRENCY]),
                         contract=ContractVersion(annotations[ACTIVE_CONTRACT]))
    except (KeyError, ValueError):
        return None


def needs_apply(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """True when the live object is missing, applied from another manifest, or scaled by hand."""
    if not live:
        return True
    want = (desired.get("metadata") or {}).get("annotations", {}).get(APPLIED_HASH)
    have = ((live.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH)
    if want != have:
        return True
    desired_replicas = (desired.get("spec") or {}).get("replicas")
    return desired_replicas is not None and \
        (live.get("spec") or {}).get("replicas") != desired_replicas
