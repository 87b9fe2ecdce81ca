"""The Kubernetes side of a WorkerPool: read it and its children, apply children, write status.

Children are applied server-side with the field manager ``spatialjoin-operator``
and only when their manifest changed (an applied-hash annotation) or someone
scaled the Deployment by hand. They carry a controller owner reference to the
pool (kopf's), so deleting the pool deletes them. kopf.adopt would also copy the
pool's labels onto them; GitOps tools track resources by such labels (Argo CD's
app.kubernetes.io/instance) and would then claim, and prune, the operator's
children, so only the owner-reference half of adopt is used.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Final, cast

import kopf
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from spatialjoin_contracts import api
from spatialjoin_contracts.models import WorkerPoolSpec
from spatialjoin_contracts.models.job import JoinSource, SpatialJoinJobSpec

from . import children
from .connections import kube_api_client, read_secret_key
from .pool_policy import Effective

FIELD_MANAGER: Final = "spatialjoin-operator"
MERGE_PATCH: Final = "application/merge-patch+json"
PDB_VERSIONS: Final = ("policy/v1", "policy/v1beta1")
KUBE_TIMEOUT_S: Final = 10


class Kube:
    """Clients made once per process: in-cluster config, else the kubeconfig."""

    def __init__(self) -> None:
        self.api = kube_api_client()
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.dynamic = dynamic.DynamicClient(self.api)  # type: ignore[no-untyped-call]
        self._resources: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def resource(self, api_version: str, kind: str) -> Any:
        with self._lock:
            key = (api_version, kind)
            if key not in self._resources:
                self._resources[key] = self.dynamic.resources.get(api_version=api_version,
                                                                  kind=kind)
            return self._resources[key]

    def pdb_version(self) -> str:
        for version in PDB_VERSIONS:
            try:
                self.resource(version, "PodDisruptionBudget")
                return version
            except ResourceNotFoundError:
                continue
        raise kopf.PermanentError("the apiserver serves no PodDisruptionBudget API")


_kube: Kube | None = None
_kube_lock = threading.Lock()


def kube() -> Kube:
    global _kube
    with _kube_lock:
        if _kube is None:
            _kube = Kube()
        return _kube


def read_pool(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found = kube().custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.POOL_PLURAL, name,
            _request_timeout=KUBE_TIMEOUT_S)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return cast(dict[str, Any], found)


def read_deployment(namespace: str, pool: str) -> dict[str, Any] | None:
    return _get("apps/v1", "Deployment", namespace, children.child_names(pool).deployment)


def live_worker_ids(namespace: str, pool: str) -> list[str]:
    """``NAMESPACE/POD`` of the pool's pods that are not being deleted."""
    selector = ",".join(f"{k}={v}" for k, v in children.selector_labels(pool).items())
    pods = kube().core.list_namespaced_pod(namespace, label_selector=selector,
                                           _request_timeout=KUBE_TIMEOUT_S)
    return [f"{namespace}/{p.metadata.name}" for p in pods.items
            if p.metadata is not None and p.metadata.deletion_timestamp is None]


def database_url(namespace: str, spec: WorkerPoolSpec) -> str:
    """The libpq URL from the pool's Secret; SecretMissing when it is not there (yet)."""
    return read_secret_key(kube().core, namespace, spec.database.url_secret_ref)


def apply_children(owner: Mapping[str, Any], spec: WorkerPoolSpec, effective: Effective,
                   live_deployment: Mapping[str, Any] | None, *, image: str | None,
                   query: children.QuerySettings) -> dict[str, Any] | None:
    """Apply what changed; returns the Deployment as it is now."""
    namespace, name = owner["metadata"]["namespace"], owner["metadata"]["name"]
    config_map = children.config_map(name, namespace, spec, query)
    config_hash = children.content_hash(config_map["data"])
    manifests = [
        config_map,
        children.service(name, namespace),
        children.pod_disruption_budget(name, namespace, kube().pdb_version()),
    ]
    for manifest in manifests:
        _apply_if_changed(owner, manifest, None)
    deployment = children.deployment(name, namespace, spec, effective, config_hash=config_hash,
                                     image=image)
    return _apply_if_changed(owner, deployment, live_deployment, known=True)


def _apply_if_changed(owner: Mapping[str, Any], manifest: dict[str, Any],
                      live: Mapping[str, Any] | None, known: bool = False
                      ) -> dict[str, Any] | None:
    body = children.with_applied_hash(manifest)
    kopf.append_owner_reference(body, owner=cast(Any, owner))
    meta = body["metadata"]
    if not known:
        live = _get(body["apiVersion"], body["kind"], meta["namespace"], meta["name"])
    if not children.needs_apply(body, live):
        return None if live is None else dict(live)
    resource = kube().resource(body["apiVersion"], body["kind"])
    applied = resource.server_side_apply(body=body, name=meta["name"],
                                         namespace=meta["namespace"],
                                         field_manager=FIELD_MANAGER, force_conflicts=True,
                                         _request_timeout=KUBE_TIMEOUT_S)
    return cast(dict[str, Any], applied.to_dict())


def _get(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found = kube().resource(api_version, kind).get(name=name, namespace=namespace,
                                                       _request_timeout=KUBE_TIMEOUT_S)
    except NotFoundError:
        return None
    return cast(dict[str, Any], found.to_dict())


def patch_status(namespace: str, name: str, patch: Mapping[str, Any]) -> None:
    if not patch:
        return
    kube().custom.patch_namespaced_custom_object_status(
        api.GROUP, api.VERSION, namespace, api.POOL_PLURAL, name, {"status": dict(patch)},
        _content_type=MERGE_PATCH, _request_timeout=KUBE_TIMEOUT_S)


def job_sources(namespace: str, pool: str) -> list[JoinSource]:
    """The join sources of the SpatialJoinJobs that run on this pool (for geometry validation)."""
    jobs = kube().custom.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace,
                                                       api.JOB_PLURAL,
                                                       _request_timeout=KUBE_TIMEOUT_S)
    sources = []
    for item in cast(dict[str, Any], jobs).get("items", []):
        try:
            spec = SpatialJoinJobSpec.model_validate(item.get("spec") or {})
        except ValueError:
            continue  # an invalid job has no sources to validate
        if spec.worker_pool_ref.name == pool:
            sources.append(spec.source)
    return sources


def post_event(body: Mapping[str, Any], *, type: str, reason: str, message: str) -> None:
    """A Kubernetes Event on the pool, through kopf's poster (batched, non-blocking)."""
    kopf.event(cast(Any, body), type=type, reason=reason, message=message)
