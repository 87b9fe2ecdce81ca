"""The chart on the stack's real Kubernetes 1.20 apiserver (token auth, RBAC on).

* helm install, upgrade and uninstall, cluster-wide and namespaced;
* ``kubectl auth can-i --as=<the chart's ServiceAccount>`` for every verb the
  operator needs (yes) and for verbs it must not have (no);
* the operator, run exactly as the chart's Deployment would run it but with
  only the ServiceAccount's token, takes a SpatialJoinJob from apply to
  Succeeded on a WorkerPool whose Deployment the local runner plays: status
  patches, Events, children, Secret reads, the TTL delete, with no 403;
* two replicas: one reconciles, the other waits and takes over;
* peering off: the standalone operator reconciles too.

A cluster-wide operator is installed and checked with can-i only: running one
would reach into the other tests' namespaces on the shared stack.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from spatialjoin_contracts import api, samples
from spatialjoin_devstack.waiting import wait_for
from tests.support.pool_world import create_pool_secrets, load_tiny_dataset

from . import expected_rbac as rbac
from .cluster import OperatorPod, Release, can_i, service_account_kubeconfig
from .helm import EXAMPLES

pytestmark = pytest.mark.integration

DB_SECRET = "spatialjoin-db"
S3_SECRET = "spatialjoin-s3"
FAST = {"operator": {"jobIntervalSeconds": 1, "poolIntervalSeconds": 2}}


def _values(tmp_path: Path, name: str, values: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _exists(read: Any, *args: Any) -> bool:
    try:
        read(*args)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


@pytest.fixture
def release(stack_env: dict[str, str], kube_api: Any) -> Iterator[Release]:
    """A release namespace (deleted afterwards) and the release, uninstalled afterwards."""
    core = client.CoreV1Api(kube_api)
    namespace = f"sjop-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    chart_release = Release(name="sj", namespace=namespace, kubeconfig=stack_env["KUBECONFIG"])
    try:
        yield chart_release
    finally:
        chart_release.uninstall(check=False)
        core.delete_namespace(namespace, propagation_policy="Background")


def _deployment(kube_api: Any, chart_release: Release) -> dict[str, Any]:
    apps = client.AppsV1Api(kube_api)
    found = apps.read_namespaced_deployment(chart_release.fullname, chart_release.namespace)
    return cast(dict[str, Any], kube_api.sanitize_for_serialization(found))


def _account(chart_release: Release) -> str:
    return f"system:serviceaccount:{chart_release.namespace}:{chart_release.fullname}"


def _assert_rules_granted(chart_release: Release, rules: rbac.Rules,
                          namespace: str | None) -> None:
    for (group, resource), verbs in sorted(rules.items()):
        name, subresource = rbac.kubectl_resource(group, resource)
        for verb in sorted(verbs):
            assert can_i(chart_release.kubeconfig, _account(chart_release), verb, name,
                         namespace=namespace, subresource=subresource), \
                f"{verb} {resource} in {namespace or 'all namespaces'} is denied"


# --- install, upgrade, uninstall --------------------------------------------------------


@pytest.mark.timeout(300)
def test_install_upgrade_uninstall(release: Release, namespace: str, kube_api: Any,
                                   tmp_path: Path) -> None:
    rbac_api = client.RbacAuthorizationV1Api(kube_api)
    custom = client.CustomObjectsApi(kube_api)
    extensions = client.ApiextensionsV1Api(kube_api)
    cluster_name = f"{release.namespace}-{release.fullname}"
    account = _account(release)

    # Install with the defaults: cluster-wide, one pod, peering.
    release.install(_values(tmp_path, "default", {}))
    for crd in ("spatialjoinjobs.spatialjoin.io", "workerpools.spatialjoin.io",
                "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        assert _exists(extensions.read_custom_resource_definition, crd)
    deployment = _deployment(kube_api, release)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings",
                                            "spatialjoin")
    _assert_rules_granted(release, {**rbac.OPERATOR, **rbac.FRAMEWORK,
                                    **rbac.FRAMEWORK_CLUSTER_PEERING}, None)
    assert not can_i(release.kubeconfig, account, "list", "secrets", namespace=None)
    assert not can_i(release.kubeconfig, account, "list", "namespaces", namespace=None)

    # Upgrade: two pods watching one namespace.
    release.upgrade(_values(tmp_path, "namespaced", {"replicaCount": 2,
                                                     "watch": {"namespaces": [namespace]}}))
    deployment = _deployment(kube_api, release)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    (operator,) = deployment["spec"]["template"]["spec"]["containers"]
    assert operator["command"][0] == "/bin/bash"
    assert f"--namespace={namespace}" in operator["args"]
    assert custom.get_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings",
                                               "spatialjoin")
    assert not _exists(custom.get_cluster_custom_object, "kopf.dev", "v1",
                       "clusterkopfpeerings", "spatialjoin")
    assert not _exists(rbac_api.read_cluster_role, cluster_name)
    assert _exists(rbac_api.read_namespaced_role, release.fullname, namespace)
    _assert_rules_granted(release, {**rbac.OPERATOR, **rbac.NAMESPACED_PEERING}, namespace)
    _assert_rules_granted(release, {**rbac.FRAMEWORK, **rbac.FRAMEWORK_NAMESPACED}, None)
    assert not can_i(release.kubeconfig, account, "list", "spatialjoinjobs.spatialjoin.io",
                     namespace=release.namespace), "a namespace it does not watch"

    # Uninstall: everything but the CRDs goes.
    release.uninstall()
    core = client.CoreV1Api(kube_api)
    assert not _exists(core.read_namespaced_service_account, release.fullname,
                       release.namespace)
    assert not _exists(rbac_api.read_cluster_role, f"{cluster_name}-framework")
    assert not _exists(rbac_api.read_namespaced_role, release.fullname, namespace)
    assert not _exists(client.AppsV1Api(kube_api).read_namespaced_deployment, release.fullname,
                       release.namespace)
    assert not _exists(custom.get_namespaced_custom_object, "kopf.dev", "v1", namespace,
                       "kopfpeerings", "spatialjoin")
    assert _exists(extensions.read_custom_resource_definition, "workerpools.spatialjoin.io")


# --- the operator with the ServiceAccount's token ---------------------------------------


class World:
    """The watched namespace with a pool's Secrets, a loaded schema and fresh topics."""

    def __init__(self, namespace: str, database_url: str, bootstrap: str,
                 topics: dict[str, str], bucket_path: str, s3: dict[str, Any],
                 kube_api: Any) -> None:
        self.namespace = namespace
        self.database_url = database_url
        self.bootstrap = bootstrap
        self.topics = topics
        self.bucket_path = bucket_path
        self.s3 = s3
        self.custom = client.CustomObjectsApi(kube_api)
        self.core = client.CoreV1Api(kube_api)

    def apply_pool(self, name: str) -> None:
        manifest = samples.pool_object(name, self.namespace)
        manifest["spec"].update({
            "broker": {"bootstrapServers": self.bootstrap, "topic": self.topics["tasks"],
                       "deadLetterTopic": self.topics["dlq"],
                       "consumerGroup": f"g-{uuid.uuid4().hex[:8]}"},
            "database": {"urlSecretRef": {"name": DB_SECRET, "key": "url"}},
            "storage": {"secretRef": {"name": S3_SECRET}, "endpoint": self.s3["endpoint"]},
            "replicas": {"min": 1, "max": 1}, "concurrency": 2, "maxHeapMb": 1024})
        self.custom.create_namespaced_custom_object(api.GROUP, api.VERSION, self.namespace,
                                                    api.POOL_PLURAL, manifest)

    def apply_job(self, name: str, pool: str) -> None:
        manifest = samples.job_object(name, self.namespace, pool,
                                      output={"uriPrefix": f"s3://{self.bucket_path}/{name}"})
        self.custom.create_namespaced_custom_object(api.GROUP, api.VERSION, self.namespace,
                                                    api.JOB_PLURAL, manifest)

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], self.custom.get_namespaced_custom_object(
                api.GROUP, api.VERSION, self.namespace, plural, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def wait_phase(self, name: str, phase: str, pods: list[OperatorPod],
                   timeout: float = 120) -> dict[str, Any]:
        """The job once in ``phase``; fails at once on Failed or on a denied call in a log."""

        def reached() -> dict[str, Any] | str | None:
            denied = [line for pod in pods for line in pod.forbidden_lines()]
            if denied:
                return "denied: " + "\n".join(denied[:5])
            job = self.get(api.JOB_PLURAL, name)
            status = (job or {}).get("status") or {}
            if status.get("phase") == "Failed" and phase != "Failed":
                return f"{name} failed: {json.dumps(status)[:2000]}"
            return job if status.get("phase") == phase else None

        try:
            found = wait_for(reached, timeout=timeout, interval=0.25, what=f"{name} {phase}")
        except TimeoutError as exc:
            job = self.get(api.JOB_PLURAL, name) or {}
            raise AssertionError(f"{exc}; status {json.dumps(job.get('status'))[:2000]}") \
                from exc
        assert isinstance(found, dict), found
        return found

    def events_for(self, name: str) -> list[Any]:
        return list(self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}").items)

    def release_finalizers(self) -> None:
        """The operator has stopped: let the namespace go without it, as an admin would."""
        for plural in (api.JOB_PLURAL, api.POOL_PLURAL):
            listed = cast(dict[str, Any], self.custom.list_namespaced_custom_object(
                api.GROUP, api.VERSION, self.namespace, plural))
            for item in listed.get("items", []):
                self.custom.patch_namespaced_custom_object(
                    api.GROUP, api.VERSION, self.namespace, plural, item["metadata"]["name"],
                    {"metadata": {"finalizers": None}})


@pytest.fixture
def world(namespace: str, db_schema: tuple[str, str], topic_names: dict[str, str],
          s3_prefix: str, kafka_settings: dict[str, Any],
          stack_settings: dict[str, Any], kube_api: Any) -> Iterator[World]:
    _, url = db_schema
    load_tiny_dataset(url, invalid_fraction=0.0)
    s3 = stack_settings["s3"]
    create_pool_secrets(kube_api, namespace, db_secret=DB_SECRET, s3_secret=S3_SECRET,
                        database_url=url, s3=s3)
    the_world = World(namespace, url, kafka_settings["bootstrap"], topic_names, s3_prefix, s3,
                      kube_api)
    try:
        yield the_world
    finally:
        the_world.release_finalizers()


def _install_namespaced(release: Release, namespace: str, tmp_path: Path, kube_api: Any,
                        **values: Any) -> Path:
    """Install watching ``namespace``; the kubeconfig of the release's ServiceAccount."""
    release.install(_values(tmp_path, "values", {**FAST, **values,
                                                 "watch": {"namespaces": [namespace]}}))
    return service_account_kubeconfig(client.CoreV1Api(kube_api), release.kubeconfig,
                                      release.namespace, release.fullname,
                                      tmp_path / "operator.kubeconfig")


@pytest.mark.timeout(420)
def test_the_operator_runs_a_job_with_only_its_service_account(
        release: Release, world: World, kube_api: Any, tmp_path: Path) -> None:
    namespace = world.namespace
    kubeconfig = _install_namespaced(release, namespace, tmp_path, kube_api)
    account = _account(release)
    _assert_rules_granted(release, {**rbac.OPERATOR, **rbac.NAMESPACED_PEERING}, namespace)
    _assert_rules_granted(release, {**rbac.FRAMEWORK, **rbac.FRAMEWORK_NAMESPACED}, None)
    for verb, resource in rbac.DENIED_IN_WATCHED_NAMESPACE:
        assert not can_i(release.kubeconfig, account, verb, resource, namespace=namespace), \
            f"{verb} {resource} should be denied"
    assert not can_i(release.kubeconfig, account, "get", "secrets", namespace=release.namespace)

    # The examples are accepted by the real apiserver (server-side dry run) in this namespace.
    for name in ("secrets.yaml", "workerpool.yaml", "spatialjoinjob.yaml"):
        for document in yaml.safe_load_all((EXAMPLES / name).read_text()):
            document["metadata"]["namespace"] = namespace
            document["metadata"]["name"] += "-example"  # the world's Secrets have these names
            _dry_run_create(kube_api, document)

    pod = OperatorPod(_deployment(kube_api, release), f"{release.fullname}-0", kubeconfig,
                      tmp_path / "pods")
    try:
        pod.wait_started()
        world.apply_pool("pool-a")
        world.apply_job("join-a", "pool-a")
        job = world.wait_phase("join-a", "Succeeded", [pod], timeout=180)
        status = job["status"]
        assert status["progress"] == "12/12" and status["rows"] > 0
        assert status["slaState"] in ("Met", "Breached")

        # The pool: status written, children created and owned by it.
        pool = world.get(api.POOL_PLURAL, "pool-a") or {}
        wait_for(lambda: (world.get(api.POOL_PLURAL, "pool-a") or {}).get("status", {}).get(
            "observedGeneration") == pool["metadata"]["generation"], timeout=30,
            what="pool status observedGeneration")
        apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
        owned: list[Any] = [apps.read_namespaced_deployment("pool-a-workers", namespace),
                            core.read_namespaced_config_map("pool-a-config", namespace),
                            core.read_namespaced_service("pool-a-metrics", namespace)]
        for child in owned:
            (owner,) = child.metadata.owner_references
            assert (owner.kind, owner.name) == (api.POOL_KIND, "pool-a")
        assert _pdb_exists(kube_api, namespace, "pool-a-workers")

        # Events, from the operator's own identity.
        reasons = {e.reason for e in world.events_for("join-a")}
        assert {"Queued", "Succeeded"} <= reasons, reasons

        # ttlSecondsAfterFinished: the operator deletes the finished job (and its finalizer).
        world.custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.JOB_PLURAL, "join-a",
            {"spec": {"ttlSecondsAfterFinished": 0}})
        wait_for(lambda: world.get(api.JOB_PLURAL, "join-a") is None, timeout=60,
                 interval=0.25, what="join-a deleted by its TTL")

        assert pod.alive(), pod.log()[-3000:]
        assert pod.forbidden_lines() == []
    finally:
        pod.stop()
    assert pod.forbidden_lines() == []


def _dry_run_create(kube_api: Any, document: dict[str, Any]) -> None:
    from kubernetes import dynamic

    resources = dynamic.DynamicClient(kube_api).resources  # type: ignore[no-untyped-call]
    resource = resources.get(api_version=document["apiVersion"], kind=document["kind"])
    resource.create(body=document, namespace=document["metadata"]["namespace"], dry_run="All")


def _pdb_exists(kube_api: Any, namespace: str, name: str) -> bool:
    from kubernetes import dynamic

    resources = dynamic.DynamicClient(kube_api).resources  # type: ignore[no-untyped-call]
    for version in ("policy/v1", "policy/v1beta1"):
        try:
            pdb = resources.get(api_version=version, kind="PodDisruptionBudget")
        except Exception:  # the version is not served (1.20 serves only v1beta1)
            continue
        return bool(pdb.get(name=name, namespace=namespace))
    return False


@pytest.mark.timeout(420)
def test_two_replicas_one_reconciles_the_other_takes_over(
        release: Release, world: World, kube_api: Any, tmp_path: Path) -> None:
    kubeconfig = _install_namespaced(release, world.namespace, tmp_path, kube_api,
                                     replicaCount=2)
    deployment = _deployment(kube_api, release)
    pods = [OperatorPod(deployment, f"{release.fullname}-{i}", kubeconfig, tmp_path / "pods")
            for i in range(2)]
    try:
        for pod in pods:
            pod.wait_started()
        # kopf starts every peering pod paused; the highest priority one resumes, and a pod
        # that resumed before it saw a higher peer pauses again (a sub-second overlap).
        # Settled means one active, one not, for two polls in a row.
        seen: list[tuple[str, str]] = []

        def settled() -> tuple[OperatorPod, OperatorPod] | None:
            active = [pod for pod in pods if _peering_state(pod.log()) == "active"]
            if len(active) != 1:
                seen.clear()
                return None
            (standby_pod,) = [pod for pod in pods if pod is not active[0]]
            seen.append((active[0].name, standby_pod.name))
            return (active[0], standby_pod) if seen[-2:] == [seen[-1]] * 2 else None

        active, standby = wait_for(settled, timeout=60, interval=0.5,
                                   what="one pod active, the other paused")
        standby_log_before = len(standby.log())
        world.apply_pool("pool-a")
        world.apply_job("join-1", "pool-a")
        world.wait_phase("join-1", "Succeeded", pods, timeout=180)
        assert "TasksPublished" in active.log()
        assert "TasksPublished" not in standby.log()
        assert "Resuming operations" not in standby.log()[standby_log_before:]

        active.stop()  # a graceful exit removes it from the peering at once
        wait_for(lambda: _peering_state(standby.log()) == "active", timeout=60, interval=0.25,
                 what="the standby resumes")
        world.apply_job("join-2", "pool-a")
        world.wait_phase("join-2", "Succeeded", pods, timeout=180)
        assert "TasksPublished" in standby.log()
        for pod in pods:
            assert pod.forbidden_lines() == [], pod.name
    finally:
        for pod in pods:
            pod.stop()


def _peering_state(log: str) -> str:
    """What kopf's peering last said in this log: "active" or "paused" (a pod with
    mandatory peering starts paused and says nothing until it resumes)."""
    return "active" if log.rfind("Resuming operations") > log.rfind("Pausing operations") \
        else "paused"


@pytest.mark.timeout(300)
def test_standalone_operator_reconciles(release: Release, world: World, kube_api: Any,
                                        tmp_path: Path) -> None:
    kubeconfig = _install_namespaced(release, world.namespace, tmp_path, kube_api,
                                     peering={"enabled": False})
    pod = OperatorPod(_deployment(kube_api, release), f"{release.fullname}-0", kubeconfig,
                      tmp_path / "pods")
    try:
        assert "--standalone" in pod.argv
        pod.wait_started()
        world.apply_pool("pool-a")
        world.apply_job("join-a", "pool-a")
        wait_for(lambda: ((world.get(api.JOB_PLURAL, "join-a") or {}).get("status") or {}).get(
            "phase") in ("Queued", "Running", "Succeeded"), timeout=30, interval=0.25,
            what="join-a queued by the standalone operator")
        assert pod.forbidden_lines() == []
    finally:
        pod.stop()
