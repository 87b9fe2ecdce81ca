"""The generated CRDs on the real apiserver (Kubernetes 1.20): defaults, rejections, subresources.

What the structural schema cannot say (no CEL on 1.20) the server accepts, and
the pure validation functions reject with a message naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from spatialjoin_contracts import api, samples
from spatialjoin_contracts.crd_generate import job_crd, pool_crd
from spatialjoin_contracts.models import (
    SpatialJoinJobSpec,
    SpatialJoinJobStatus,
    WorkerPoolSpec,
)
from spatialjoin_contracts.partition_map import grid_partition_map, partition_map_document
from spatialjoin_contracts.validation import check_job_spec, check_pool_spec
from spatialjoin_devstack.waiting import wait_for

pytestmark = pytest.mark.integration

TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io"


def _apply_crd(extensions: client.ApiextensionsV1Api, crd: dict[str, Any]) -> None:
    name = crd["metadata"]["name"]
    try:
        current = extensions.read_custom_resource_definition(name)
    except ApiException as exc:
        if exc.status != 404:
            raise
        extensions.create_custom_resource_definition(cast(Any, crd))
    else:
        version = cast(Any, current).metadata.resource_version
        body = {**crd, "metadata": {**crd["metadata"], "resourceVersion": version}}
        extensions.replace_custom_resource_definition(name, cast(Any, body))


def _established(extensions: client.ApiextensionsV1Api, name: str) -> bool:
    crd: Any = extensions.read_custom_resource_definition(name)
    return any(
        c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])
    )


@pytest.fixture(scope="module")
def crds(kube_api: Any) -> Iterator[None]:
    """Both generated CRDs applied (create or replace) and established; left installed."""
    extensions = client.ApiextensionsV1Api(kube_api)
    for crd in (job_crd(), pool_crd()):
        _apply_crd(extensions, crd)
    for name in (job_crd()["metadata"]["name"], pool_crd()["metadata"]["name"]):
        wait_for(
            lambda name=name: _established(extensions, name),  # type: ignore[misc]
            timeout=30,
            what=f"{name} established",
        )
    # Discovery of a new CRD lags its Established condition a little.
    custom = client.CustomObjectsApi(kube_api)
    wait_for(
        lambda: (
            custom.list_cluster_custom_object(api.GROUP, api.VERSION, api.POOL_PLURAL) is not None
        ),
        timeout=30,
        what="workerpools served",
    )
    yield


@pytest.fixture
def custom(kube_api: Any, crds: None) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api)


def _create(custom: client.CustomObjectsApi, namespace: str, obj: dict[str, Any]) -> Any:
    plural = api.POOL_PLURAL if obj["kind"] == api.POOL_KIND else api.JOB_PLURAL
    obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    return custom.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, plural, obj)


def _get(custom: client.CustomObjectsApi, namespace: str, plural: str, name: str) -> Any:
    return custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, plural, name)


def _rejection(call: Callable[[], Any]) -> str:
    with pytest.raises(ApiException) as info:
        call()
    assert info.value.status == 422, info.value.body
    return str(json.loads(info.value.body or "{}")["message"])


# --- defaults applied by the server ------------------------------------------


def test_minimal_pool_gets_the_design_defaults_from_the_server(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    created = _create(custom, namespace, samples.pool_object("pool-a"))
    spec = created["spec"]
    assert spec["concurrency"] == 8
    assert spec["maxHeapMb"] == 4096
    assert spec["engine"] == "postgis"
    assert spec["contract"] == "v2.1"
    assert spec["replicas"] == {"min": 1, "max": 12}
    assert spec["broker"] == {
        "bootstrapServers": "127.0.0.1:9092",
        "topic": "tasks",
        "partitions": 12,
        "retentionMs": 3_600_000,
        "acks": "all",
        "lingerMs": 5,
        "batchSizeBytes": 16384,
        "idempotentProducer": True,
        "deadLetterTopic": "tasks.dlq",
    }
    assert spec["escalation"] == {
        "p3": {"latencySeconds": 45, "concurrency": 12},
        "p2": {"consumerLag": 10_000},
        "p1": {"onMaterializationFailure": True, "onSchemaDrift": True, "rollbackContract": "v2.0"},
        "cooldownSeconds": 300,
    }
    # What the server stored is exactly what the model defaults to.
    parsed = WorkerPoolSpec.model_validate(spec)
    assert parsed.to_k8s() == spec
    assert check_pool_spec(spec)[1] == []


def test_minimal_job_gets_the_design_defaults_from_the_server(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    created = _create(custom, namespace, samples.job_object("job-a"))
    spec = created["spec"]
    assert spec["sla"] == {"deadlineSeconds": 90}
    assert spec["retry"] == {"maxRetries": 3, "initialDelaySeconds": 2, "maxDelaySeconds": 30}
    assert spec["output"]["contract"] == "v2.1"
    assert spec["output"]["compression"] == "zstd"
    assert spec["source"]["predicate"] == {"type": "intersects"}
    assert spec["source"]["polygons"]["partitionColumn"] == "spatial_partition"
    assert spec["suspend"] is False
    assert "traceId" not in spec
    parsed = SpatialJoinJobSpec.model_validate(spec)
    assert parsed.to_k8s() == spec
    assert parsed.effective_trace_id(created["metadata"]["uid"]) == created["metadata"]["uid"]


def test_unknown_fields_are_pruned(custom: client.CustomObjectsApi, namespace: str) -> None:
    obj = samples.pool_object("pool-pruned")
    obj["spec"]["replica"] = 3
    created = _create(custom, namespace, obj)
    assert "replica" not in created["spec"]


# --- rejected by the server's schema ------------------------------------------

SCHEMA_REJECTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("pool concurrency 0", samples.pool_object("p1", concurrency=0), "spec.concurrency"),
    ("pool heap too small", samples.pool_object("p2", maxHeapMb=64), "spec.maxHeapMb"),
    (
        "pool acks 2",
        samples.pool_object("p3", broker={"bootstrapServers": "k:9092", "acks": "2"}),
        "spec.broker.acks",
    ),
    ("pool engine", samples.pool_object("p4", engine="duckdb"), "spec.engine"),
    (
        "pool no image",
        {
            **samples.pool_object("p5"),
            "spec": {k: v for k, v in samples.pool_spec().items() if k != "image"},
        },
        "spec.image",
    ),
    (
        "pool latitude 95",
        samples.pool_object(
            "p6",
            partitionMap=[
                {
                    "name": "p00",
                    "kafkaPartition": 0,
                    "bbox": {"minLon": -10, "minLat": 0, "maxLon": 10, "maxLat": 95},
                }
            ],
        ),
        "spec.partitionMap.bbox.maxLat",
    ),  # 1.20 leaves the index out of its message
    (
        "pool duplicate partition names (list map)",
        samples.pool_object(
            "p7",
            partitionMap=[
                *partition_map_document(grid_partition_map())["partitionMap"][:2],
                {**partition_map_document(grid_partition_map())["partitionMap"][2], "name": "p01"},
            ],
        ),
        "spec.partitionMap[2]",
    ),
    ("pool empty partition map", samples.pool_object("p8", partitionMap=[]), "spec.partitionMap"),
    (
        "pool p3 latency 0",
        samples.pool_object("p9", escalation={"p3": {"latencySeconds": 0}}),
        "spec.escalation.p3.latencySeconds",
    ),
    (
        "job contract v3",
        samples.job_object("j1", output={"uriPrefix": "s3://bkt/x", "contract": "v3"}),
        "spec.output.contract",
    ),
    (
        "job compression gzip",
        samples.job_object("j2", output={"uriPrefix": "s3://bkt/x", "compression": "gzip"}),
        "spec.output.compression",
    ),
    ("job trace id with a space", samples.job_object("j3", traceId="a b"), "spec.traceId"),
    (
        "job no pool ref",
        {
            **samples.job_object("j4"),
            "spec": {k: v for k, v in samples.job_spec().items() if k != "workerPoolRef"},
        },
        "spec.workerPoolRef",
    ),
    (
        "job sql in table name",
        samples.job_object(
            "j5", source={"polygons": {"table": "a;drop table b"}, "points": {"table": "b"}}
        ),
        "spec.source.polygons.table",
    ),
    (
        "job duplicate partitions (list set)",
        samples.job_object("j6", partitions=["p01", "p01"]),
        "spec.partitions[1]",
    ),
    (
        "job deadline 0",
        samples.job_object("j7", sla={"deadlineSeconds": 0}),
        "spec.sla.deadlineSeconds",
    ),
    (
        "job predicate",
        samples.job_object(
            "j8",
            source={
                "polygons": {"table": "a"},
                "points": {"table": "b"},
                "predicate": {"type": "touches"},
            },
        ),
        "spec.source.predicate.type",
    ),
]


@pytest.mark.parametrize(
    ("obj", "field"),
    [case[1:] for case in SCHEMA_REJECTIONS],
    ids=[case[0] for case in SCHEMA_REJECTIONS],
)
def test_the_server_schema_rejects(
    custom: client.CustomObjectsApi, namespace: str, obj: dict[str, Any], field: str
) -> None:
    message = _rejection(lambda: _create(custom, namespace, obj))
    assert field in message, message


# --- accepted by the server, rejected by the validation functions -------------


def _with_entry(index: int, **change: Any) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = partition_map_document(grid_partition_map())["partitionMap"]
    entries[index] = {**entries[index], **change}
    return entries


FUNCTION_REJECTIONS: list[tuple[str, dict[str, Any], str]] = [
    (
        "replicas min > max",
        samples.pool_object("v1", replicas={"min": 5, "max": 2}),
        "spec.replicas.min",
    ),
    (
        "duplicate kafka partition",
        samples.pool_object("v2", partitionMap=_with_entry(3, kafkaPartition=1)),
        "spec.partitionMap[3].kafkaPartition",
    ),
    (
        "kafka partition beyond the topic",
        samples.pool_object("v3", partitionMap=_with_entry(11, kafkaPartition=40)),
        "spec.partitionMap[11].kafkaPartition",
    ),
    (
        "bbox upside down",
        samples.pool_object(
            "v4",
            partitionMap=_with_entry(
                0, bbox={"minLon": -110, "minLat": 33, "maxLon": -125, "maxLat": 25}
            ),
        ),
        "spec.partitionMap[0].bbox.minLon",
    ),
    (
        "p3 concurrency below base",
        samples.pool_object("v5", concurrency=16),
        "spec.escalation.p3.concurrency",
    ),
]


@pytest.mark.parametrize(
    ("obj", "field"),
    [case[1:] for case in FUNCTION_REJECTIONS],
    ids=[case[0] for case in FUNCTION_REJECTIONS],
)
def test_rules_beyond_the_schema_are_caught_by_validate_pool(
    custom: client.CustomObjectsApi, namespace: str, obj: dict[str, Any], field: str
) -> None:
    stored = _create(custom, namespace, obj)  # 1.20 has no CEL: the server accepts it
    _, errors = check_pool_spec(stored["spec"])
    assert field in [e.field for e in errors], errors
    assert all(e.message.startswith(e.field) for e in errors)


def test_job_partitions_outside_the_pool_map_are_caught_by_validate_job(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    pool = _create(custom, namespace, samples.pool_object("pool-b"))
    job = _create(
        custom, namespace, samples.job_object("job-b", pool="pool-b", partitions=["p01", "p42"])
    )
    pool_spec = WorkerPoolSpec.model_validate(pool["spec"])
    _, errors = check_job_spec(job["spec"], pool_spec)
    assert [e.field for e in errors] == ["spec.partitions[1]"]
    assert "'p42' is not in the partitionMap of WorkerPool 'pool-b'" in errors[0].message


# --- subresources and printer columns -----------------------------------------


def _table(custom: client.CustomObjectsApi, namespace: str, plural: str) -> dict[str, Any]:
    """What `kubectl get` shows: the server-side Table with the printer columns."""
    response: Any = custom.list_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        plural,
        _headers={"Accept": TABLE_ACCEPT},
        _preload_content=False,
    )
    table: dict[str, Any] = json.loads(response.data)
    return table


def test_job_status_subresource_and_printer_columns(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    _create(custom, namespace, samples.job_object("job-c"))
    status = SpatialJoinJobStatus.model_validate(
        {
            "phase": "Running",
            "traceId": "t-1",
            "partitionsTotal": 12,
            "partitionsDone": 3,
            "progress": "3/12",
            "rows": 1234,
            "slaState": "OnTrack",
            "activeContract": "v2.1",
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "PartitionsRunning",
                    "message": "3 of 12 partitions done",
                    "observedGeneration": 1,
                    "lastTransitionTime": "2024-05-01T10:00:00Z",
                }
            ],
        }
    )
    custom.patch_namespaced_custom_object_status(
        api.GROUP, api.VERSION, namespace, api.JOB_PLURAL, "job-c", {"status": status.to_k8s()}
    )
    stored = _get(custom, namespace, api.JOB_PLURAL, "job-c")
    assert SpatialJoinJobStatus.model_validate(stored["status"]) == status
    table = _table(custom, namespace, api.JOB_PLURAL)
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names[:6] == ["Name", "Phase", "Partitions", "Rows", "SLA", "Age"]
    assert table["rows"][0]["cells"][:5] == ["job-c", "Running", "3/12", 1234, "OnTrack"]


def test_status_is_not_writable_through_the_main_resource(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    _create(custom, namespace, samples.job_object("job-d"))
    custom.patch_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.JOB_PLURAL,
        "job-d",
        {"status": {"phase": "Succeeded"}},
    )
    stored = _get(custom, namespace, api.JOB_PLURAL, "job-d")
    assert "status" not in stored


def test_invalid_status_is_rejected(custom: client.CustomObjectsApi, namespace: str) -> None:
    _create(custom, namespace, samples.job_object("job-e"))
    message = _rejection(
        lambda: custom.patch_namespaced_custom_object_status(
            api.GROUP,
            api.VERSION,
            namespace,
            api.JOB_PLURAL,
            "job-e",
            {"status": {"phase": "Exploded"}},
        )
    )
    assert "status.phase" in message


def test_pool_scale_subresource_sets_the_replica_floor(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    _create(custom, namespace, samples.pool_object("pool-s"))
    custom.patch_namespaced_custom_object_status(
        api.GROUP,
        api.VERSION,
        namespace,
        api.POOL_PLURAL,
        "pool-s",
        {
            "status": {
                "replicas": 2,
                "readyReplicas": 1,
                "selector": "app=w",
                "effectiveConcurrency": 8,
                "activeContract": "v2.1",
                "lag": {"total": 17},
            }
        },
    )
    scale: Any = custom.get_namespaced_custom_object_scale(
        api.GROUP, api.VERSION, namespace, api.POOL_PLURAL, "pool-s"
    )
    assert scale["spec"]["replicas"] == 1
    assert scale["status"] == {"replicas": 2, "selector": "app=w"}
    custom.patch_namespaced_custom_object_scale(
        api.GROUP, api.VERSION, namespace, api.POOL_PLURAL, "pool-s", {"spec": {"replicas": 3}}
    )
    stored = _get(custom, namespace, api.POOL_PLURAL, "pool-s")
    assert stored["spec"]["replicas"] == {"min": 3, "max": 12}
    table = _table(custom, namespace, api.POOL_PLURAL)
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == [
        "Name",
        "Replicas",
        "Ready",
        "Concurrency",
        "Contract",
        "Lag",
        "Severity",
        "Age",
    ]
    assert table["rows"][0]["cells"][:6] == ["pool-s", 2, 1, 8, "v2.1", 17]
