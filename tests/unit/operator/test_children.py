"""children: the Deployment, ConfigMap, Service and PDB a WorkerPool owns, as manifests."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from spatialjoin_devstack import podspec
from spatialjoin_operator import children
from spatialjoin_operator.pool_policy import Effective

from .pool_timeline import effective, pool

pytestmark = pytest.mark.unit

SPEC = pool(broker={"bootstrapServers": "127.0.0.1:9092", "topic": "tasks-x",
                    "deadLetterTopic": "tasks-x.dlq"},
            storage={"secretRef": {"name": "s3"}, "endpoint": "http://127.0.0.1:8333",
                     "region": "eu-west-1"},
            database={"urlSecretRef": {"name": "db", "key": "dsn"}}, maxHeapMb=2048)


def deployment(eff: Effective | None = None, spec: Any = SPEC) -> dict[str, Any]:
    return children.deployment("pool-a", "ns", spec, eff or effective(3, 12, "v2.0"),
                               config_hash="abc")


def env_of(manifest: dict[str, Any]) -> dict[str, Any]:
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize(("name", "expected"), [
    ("SPATIALJOIN_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
    ("SPATIALJOIN_TOPIC", "tasks-x"),
    ("SPATIALJOIN_DEAD_LETTER_TOPIC", "tasks-x.dlq"),
    ("SPATIALJOIN_CONSUMER_GROUP", "spatialjoin.ns.pool-a"),
    ("SPATIALJOIN_CONCURRENCY", "12"),
    ("SPATIALJOIN_ACTIVE_CONTRACT", "v2.0"),
    ("SPATIALJOIN_MAX_HEAP_MB", "2048"),
    ("SPATIALJOIN_ENGINE", "postgis"),
    ("SPATIALJOIN_S3_ENDPOINT", "http://127.0.0.1:8333"),
    ("SPATIALJOIN_S3_REGION", "eu-west-1"),
    ("SPATIALJOIN_METRICS_ADDR", "0.0.0.0"),
    ("SPATIALJOIN_METRICS_PORT", "9108"),
    ("SPATIALJOIN_WORKER_ID", "$(POD_NAMESPACE)/$(POD_NAME)"),
    ("SPATIALJOIN_DATABASE_URL", {"secretKeyRef": {"name": "db", "key": "dsn"}}),
    ("AWS_ACCESS_KEY_ID", {"secretKeyRef": {"name": "s3", "key": "AWS_ACCESS_KEY_ID"}}),
    ("AWS_SECRET_ACCESS_KEY", {"secretKeyRef": {"name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}}),
    ("SPATIALJOIN_STATEMENT_TIMEOUT_S",
     {"configMapKeyRef": {"name": "pool-a-config", "key": "SPATIALJOIN_STATEMENT_TIMEOUT_S"}}),
])
def test_worker_env_comes_from_the_spec_and_the_effective_values(name: str,
                                                                 expected: Any) -> None:
    assert env_of(deployment())[name] == expected


def test_explicit_consumer_group_and_no_endpoint() -> None:
    spec = pool(broker={"bootstrapServers": "h:1", "consumerGroup": "mine"})
    env = env_of(deployment(spec=spec))
    assert env["SPATIALJOIN_CONSUMER_GROUP"] == "mine"
    assert "SPATIALJOIN_S3_ENDPOINT" not in env


def test_deployment_is_hardened_probed_and_sized_from_the_heap() -> None:
    manifest = deployment()
    assert manifest["spec"]["replicas"] == 3
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["spatialjoin", "worker"]
    assert container["resources"]["limits"]["memory"] == "2304Mi"  # 2048 + 2048/8
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert pod["securityContext"]["runAsNonRoot"] is True
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics",
                                               "scheme": "HTTP"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 9108, "protocol": "TCP"}]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]


@pytest.mark.parametrize(("heap", "limit"), [(256, 384), (1024, 1152), (4096, 4608)])
def test_memory_limit_leaves_headroom_above_the_heap_cap(heap: int, limit: int) -> None:
    assert children.memory_limit_mb(heap) == limit


def test_labels_select_what_the_local_runner_runs() -> None:
    manifest = deployment()
    template_labels = manifest["spec"]["template"]["metadata"]["labels"]
    wanted = dict(pair.split("=") for pair in podspec.WORKER_SELECTOR.split(","))
    assert wanted.items() <= template_labels.items()
    assert manifest["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
    assert children.selector_string("pool-a") == ",".join(
        f"{k}={v}" for k, v in sorted(children.selector_labels("pool-a").items()))


def test_the_runner_resolves_the_worker_id_to_namespace_and_pod() -> None:
    pod = {"metadata": {"name": "pool-a-workers-5d8f9c7b6-x2x9z", "namespace": "ns"},
           "spec": deployment()["spec"]["template"]["spec"]}
    container = pod["spec"]["containers"][0]
    secrets = {"db": {"data": {"dsn": "eA=="}},
               "s3": {"data": {"AWS_ACCESS_KEY_ID": "eA==", "AWS_SECRET_ACCESS_KEY": "eA=="}}}
    configmap = children.config_map("pool-a", "ns", SPEC)
    env = podspec.resolve_env(pod, container,
                              podspec.EnvSources(secrets=secrets,
                                                 config_maps={"pool-a-config": configmap}),
                              podspec.NodeInfo("local"))
    assert env["SPATIALJOIN_WORKER_ID"] == "ns/pool-a-workers-5d8f9c7b6-x2x9z"
    assert re.match(children.worker_id_pattern("ns", "pool-a"), env["SPATIALJOIN_WORKER_ID"])
    assert not re.match(children.worker_id_pattern("ns", "pool"), env["SPATIALJOIN_WORKER_ID"])
    assert not re.match(children.worker_id_pattern("other", "pool-a"),
                        env["SPATIALJOIN_WORKER_ID"])


def test_config_map_holds_the_partition_map_and_query_settings() -> None:
    manifest = children.config_map("pool-a", "ns", SPEC, children.QuerySettings(60))
    mapped = json.loads(manifest["data"]["partition-map.json"])
    assert [e["name"] for e in mapped] == SPEC.partition_names()
    assert manifest["data"]["SPATIALJOIN_STATEMENT_TIMEOUT_S"] == "60"


def test_service_and_pdb() -> None:
    service = children.service("pool-a", "ns")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    pdb = children.pod_disruption_budget("pool-a", "ns", "policy/v1beta1")
    assert pdb["apiVersion"] == "policy/v1beta1" and pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == children.selector_labels("pool-a")


@pytest.mark.parametrize(("pool_name", "suffix", "limit", "dns1035", "expected"), [
    ("pool-a", "-metrics", 63, True, "pool-a-metrics"),
    ("pools.example", "-metrics", 63, True, "pools-example-metrics"),
    ("1pool", "-metrics", 63, True, "sj-1pool-metrics"),
    ("pool-a", "-workers", 253, False, "pool-a-workers"),
])
def test_child_names(pool_name: str, suffix: str, limit: int, dns1035: bool,
                     expected: str) -> None:
    assert children.fit_name(pool_name, suffix, limit, dns1035=dns1035) == expected


def test_long_names_are_shortened_with_a_hash() -> None:
    long = "a" * 80
    name = children.fit_name(long, "-metrics", 63, dns1035=True)
    assert len(name) <= 63 and name.endswith("-metrics")
    assert name != children.fit_name("a" * 81, "-metrics", 63, dns1035=True)
    assert len(children.selector_labels("b" * 200)[children.POOL_LABEL]) <= 63


def test_spec_changes_roll_the_workers_but_replicas_and_escalation_do_not() -> None:
    def template_hash(spec: Any) -> str:
        return str(deployment(spec=spec)["spec"]["template"]["metadata"]["annotations"][
            children.SPEC_HASH])

    base = template_hash(SPEC)
    assert template_hash(SPEC.model_copy(update={"max_heap_mb": 4096})) != base
    assert template_hash(pool(broker={"bootstrapServers": "127.0.0.1:9092", "topic": "tasks-x",
                                      "deadLetterTopic": "tasks-x.dlq"},
                              storage={"secretRef": {"name": "s3"},
                                       "endpoint": "http://127.0.0.1:8333",
                                       "region": "eu-west-1"},
                              database={"urlSecretRef": {"name": "db", "key": "dsn"}},
                              maxHeapMb=2048, replicas={"min": 3, "max": 5},
                              escalation={"cooldownSeconds": 1})) == base


def test_apply_only_when_the_manifest_or_the_replicas_moved() -> None:
    desired = children.with_applied_hash(deployment())
    live = json.loads(json.dumps(desired))
    live["metadata"]["annotations"]["other"] = "added by the apiserver"
    assert not children.needs_apply(desired, live)
    live["spec"]["replicas"] = 1  # someone scaled the Deployment by hand
    assert children.needs_apply(desired, live)
    changed = children.with_applied_hash(deployment(effective(3, 8, "v2.0")))
    assert children.needs_apply(changed, desired)
    assert children.needs_apply(desired, None)


def test_effective_values_read_back_from_the_deployment() -> None:
    manifest = deployment(effective(4, 12, "v2.0"))
    assert children.effective_from_deployment(manifest) == effective(4, 12, "v2.0")
    assert children.effective_from_deployment(None) is None
    manifest["metadata"]["annotations"].pop(children.EFFECTIVE_CONCURRENCY)
    assert children.effective_from_deployment(manifest) is None
