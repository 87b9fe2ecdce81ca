"""The Kubernetes side of a diagnosis: the job carrying a traceId, its Events, its pool.

Reads only. The job is found by its effective traceId (status.traceId, else
spec.traceId, else its uid, which is the default traceId).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from spatialjoin_contracts import api
from spatialjoin_contracts.models import SpatialJoinJobSpec, WorkerPoolSpec
from spatialjoin_contracts.validation import check_pool_spec

from ..connections import read_secret_key
from .facts import EventRecord, JobRef

QUEUED_SPEC_ANNOTATION: Final = api.QUEUED_SPEC_ANNOTATION
KUBE_TIMEOUT_S: Final = 10
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster configuration, else the kubeconfig ($KUBECONFIG or ``kubeconfig``)."""
    configuration = client.Configuration()
    try:
        if kubeconfig:
            raise config.ConfigException("a kubeconfig was given")
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration)
    return client.ApiClient(configuration)


def find_job(kube: client.ApiClient, trace_id: str,
             namespace: str | None = None) -> dict[str, Any] | None:
    """The SpatialJoinJob whose effective traceId is ``trace_id``."""
    custom = client.CustomObjectsApi(kube)
    if namespace:
        listing = custom.list_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.JOB_PLURAL, _request_timeout=KUBE_TIMEOUT_S)
    else:
        listing = custom.list_cluster_custom_object(
            api.GROUP, api.VERSION, api.JOB_PLURAL, _request_timeout=KUBE_TIMEOUT_S)
    for item in cast(Mapping[str, Any], listing).get("items", []):
        if effective_trace_id(item) == trace_id:
            return cast(dict[str, Any], item)
    return None


def effective_trace_id(body: Mapping[str, Any]) -> str:
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    return str(status.get("traceId") or spec.get("traceId") or body["metadata"]["uid"])


def job_spec(body: Mapping[str, Any]) -> SpatialJoinJobSpec | None:
    """The join as queued (the queued-spec annotation), else the current spec."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    for raw in (annotations.get(QUEUED_SPEC_ANNOTATION), body.get("spec")):
        if not raw:
            continue
        try:
            return SpatialJoinJobSpec.model_validate(json.loads(raw) if isinstance(raw, str)
                                                     else raw)
        except ValueError:
            continue
    return None


def job_ref(body: Mapping[str, Any], spec: SpatialJoinJobSpec | None) -> JobRef:
    meta, status = body["metadata"], body.get("status") or {}
    return JobRef(
        namespace=meta["namespace"], name=meta["name"], uid=meta["uid"],
        phase=status.get("phase"), sla_state=status.get("slaState"),
        deadline_seconds=spec.sla.deadline_seconds if spec else None,
        pool=spec.worker_pool_ref.name if spec else None,
        uri_prefix=spec.output.uri_prefix if spec else None,
        conditions=tuple(dict(c) for c in status.get("conditions") or []))


def job_events(kube: client.ApiClient, namespace: str, uid: str) -> tuple[EventRecord, ...]:
    """The job's Events, oldest first."""
    events = client.CoreV1Api(kube).list_namespaced_event(
        namespace, field_selector=f"involvedObject.uid={uid}", _request_timeout=KUBE_TIMEOUT_S)
    records = [EventRecord(type=e.type or "", reason=e.reason or "", message=e.message or "",
                           count=e.count or 1, last_time=_event_time(e))
               for e in events.items]
    return tuple(sorted(records, key=lambda e: e.last_time or _EPOCH))


def _event_time(event: Any) -> datetime | None:
    moment = event.last_timestamp or event.event_time or event.first_timestamp
    return moment if isinstance(moment, datetime) else None


def pool_spec(kube: client.ApiClient, namespace: str, name: str) -> WorkerPoolSpec | None:
    try:
        body = client.CustomObjectsApi(kube).get_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.POOL_PLURAL, name,
            _request_timeout=KUBE_TIMEOUT_S)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    spec, _errors = check_pool_spec(cast(Mapping[str, Any], body).get("spec") or {})
    return spec


def database_url(kube: client.ApiClient, namespace: str, pool: WorkerPoolSpec) -> str:
    """The pool's database URL from its Secret (SecretMissing when absent)."""
    return read_secret_key(client.CoreV1Api(kube), namespace, pool.database.url_secret_ref)
