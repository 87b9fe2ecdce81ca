"""The diagnosis the operator runs on an SLA breach: in a thread, recorded on the job.

The job timer calls :func:`diagnose_in_background`, which returns at once;
the diagnosis runs in a small thread pool (bounded by its statement
timeout), then records what it found:

* the annotation ``spatialjoin.io/diagnosis``: the traceId, the time and
  the primary finding as JSON. It is the durable record: the timer asks
  :func:`needs_diagnosis`, which is False once it exists, so a breach is
  diagnosed once, and again after an operator restart only if the first run
  never finished (a failed run records ``retryAt``, five minutes on);
* the condition ``Diagnosed`` (reason = the finding's code, message = cause
  and fix), written with the object's resourceVersion so it never overwrites
  a newer status (on a conflict it re-reads and retries);
* an Event, reason ``Diagnosed``, naming the cause and the recommended fix.

Nothing here blocks reconciliation, and the diagnosis never changes the
database (see gather.py).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from spatialjoin_contracts import api
from spatialjoin_contracts.models import SpatialJoinJobSpec, WorkerPoolSpec

from ..conditions import Condition, get_condition
from . import kube, service
from .facts import JobRef
from .record import (
    CONDITION_TYPE,
    DIAGNOSIS_ANNOTATION,
    EVENT_REASON,
    FAILED,
    annotation_value,
    condition_fields,
    failure_annotation,
    with_condition,
)
from .report import Report

MAX_WORKERS: Final = 2
CONFLICT_RETRIES: Final = 5
EVENT_MESSAGE_LIMIT: Final = 1024

log = logging.getLogger("spatialjoin.diagnose")

_executor = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="sj-diagnose")
_in_flight: set[str] = set()
_lock = threading.Lock()


def diagnose_in_background(
    *, namespace: str, name: str, uid: str, trace_id: str, job: SpatialJoinJobSpec,
    pool: WorkerPoolSpec, database_url: str | None = None,
    api_client: client.ApiClient | None = None, options: service.Options | None = None,
    generation: int | None = None,
) -> Future[Report] | None:
    """Schedule a diagnosis of the job and return at once; None when one is already running.

    ``database_url`` defaults to the pool's Secret; ``api_client`` to the
    in-cluster or kubeconfig client. The Future is for tests; the operator can drop it.
    """
    with _lock:
        if uid in _in_flight:
            return None
        _in_flight.add(uid)
    target = JobTarget(namespace, name, uid, trace_id, job, pool, generation)
    future = _executor.submit(_run_and_record, target, database_url, api_client,
                              options or service.Options())
    future.add_done_callback(lambda _f: _forget(uid))
    return future


@dataclass(frozen=True)
class JobTarget:
    """The job a background diagnosis is about."""

    namespace: str
    name: str
    uid: str
    trace_id: str
    job: SpatialJoinJobSpec
    pool: WorkerPoolSpec
    generation: int | None = None


def _forget(uid: str) -> None:
    with _lock:
        _in_flight.discard(uid)


def _run_and_record(target: JobTarget, database_url: str | None,
                    api_client: client.ApiClient | None, options: service.Options) -> Report:
    kube_api = api_client or kube.api_client()
    try:
        return _diagnose_and_record(kube_api, target, database_url, options)
    finally:
        if api_client is None:
            kube_api.close()  # type: ignore[no-untyped-call]


def _diagnose_and_record(kube_api: client.ApiClient, target: JobTarget,
                         database_url: str | None, options: service.Options) -> Report:
    try:
        url = database_url or kube.database_url(kube_api, target.namespace, target.pool)
        ref = JobRef(namespace=target.namespace, name=target.name, uid=target.uid,
                     deadline_seconds=target.job.sla.deadline_seconds,
                     pool=target.job.worker_pool_ref.name,
                     uri_prefix=target.job.output.uri_prefix)
        report = service.run(service.Target(trace_id=target.trace_id, job=target.job,
                                            pool=target.pool, ref=ref), url, options)
    except Exception as exc:
        log.exception("diagnosis of traceId %s failed", target.trace_id)
        _record_failure(kube_api, target, exc)
        raise
    record(kube_api, target, report)
    return report


# --- recording on the job ---------------------------------------------------------------


def record(kube_api: client.ApiClient, target: JobTarget, report: Report) -> None:
    """Annotation, condition and Event on the job."""
    top = report.primary
    reason, message = condition_fields(top)
    custom = client.CustomObjectsApi(kube_api)
    try:
        custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, target.namespace, api.JOB_PLURAL, target.name,
            {"metadata": {"annotations": {DIAGNOSIS_ANNOTATION: annotation_value(report)}}},
            _request_timeout=kube.KUBE_TIMEOUT_S)
    except ApiException as exc:
        if exc.status == 404:
            return  # the job is gone
        raise
    _set_condition(custom, target, lambda c: with_condition(
        c, reason, message, target.generation, report.facts.now))
    post_event(kube_api, target, "Warning" if top is not None else "Normal",
               f"{reason}: {message}")


def _record_failure(kube_api: client.ApiClient, target: JobTarget, exc: Exception) -> None:
    """The diagnosis itself failed: say so (Unknown); the annotation says when to retry."""
    message = f"diagnosis failed: {type(exc).__name__}: {exc}"
    now = datetime.now(UTC)
    try:
        client.CustomObjectsApi(kube_api).patch_namespaced_custom_object(
            api.GROUP, api.VERSION, target.namespace, api.JOB_PLURAL, target.name,
            {"metadata": {"annotations": {
                DIAGNOSIS_ANNOTATION: failure_annotation(target.trace_id, message, now)}}},
            _request_timeout=kube.KUBE_TIMEOUT_S)
        _set_condition(client.CustomObjectsApi(kube_api), target, lambda c: with_condition(
            c, FAILED, message, target.generation, now, status="Unknown"))
        post_event(kube_api, target, "Warning", message)
    except Exception:
        log.exception("could not record the failed diagnosis of %s/%s", target.namespace,
                      target.name)


def _set_condition(custom: client.CustomObjectsApi, target: JobTarget,
                   change: Callable[[Sequence[Mapping[str, Any]]], list[Condition]]) -> None:
    """Read, change, write with the resourceVersion read; re-read on a conflict."""
    for _attempt in range(CONFLICT_RETRIES):
        try:
            body = cast(Mapping[str, Any], custom.get_namespaced_custom_object(
                api.GROUP, api.VERSION, target.namespace, api.JOB_PLURAL, target.name,
                _request_timeout=kube.KUBE_TIMEOUT_S))
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        if body["metadata"]["uid"] != target.uid:
            return  # deleted and re-created under the same name: not our job any more
        current = (body.get("status") or {}).get("conditions") or []
        updated = change(current)
        if get_condition(updated, CONDITION_TYPE) == get_condition(current, CONDITION_TYPE):
            return
        try:
            custom.patch_namespaced_custom_object_status(
                api.GROUP, api.VERSION, target.namespace, api.JOB_PLURAL, target.name,
                {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                 "status": {"conditions": updated}}, _request_timeout=kube.KUBE_TIMEOUT_S)
            return
        except ApiException as exc:
            if exc.status == 409:
                continue
            if exc.status == 404:
                return
            raise
    log.warning("condition %s of %s/%s not written: %d conflicts in a row", CONDITION_TYPE,
                target.namespace, target.name, CONFLICT_RETRIES)


def post_event(kube_api: client.ApiClient, target: JobTarget, kind: str, message: str,
               reason: str = EVENT_REASON) -> None:
    """A core/v1 Event on the job (kopf.event needs the operator's loop; this is a thread)."""
    now = datetime.now(UTC)
    text = message if len(message) <= EVENT_MESSAGE_LIMIT else \
        message[:EVENT_MESSAGE_LIMIT - 1] + "…"
    body = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{target.name}.",
                                     namespace=target.namespace),
        involved_object=client.V1ObjectReference(
            api_version=api.API_VERSION, kind=api.JOB_KIND, name=target.name,
            namespace=target.namespace, uid=target.uid),
        reason=reason, message=text, type=kind, count=1,
        first_timestamp=now, last_timestamp=now,
        source=client.V1EventSource(component="spatialjoin-operator", host=socket.gethostname()),
        reporting_component="spatialjoin-operator", reporting_instance=socket.gethostname())
    client.CoreV1Api(kube_api).create_namespaced_event(target.namespace, body,
                                                       _request_timeout=kube.KUBE_TIMEOUT_S)
