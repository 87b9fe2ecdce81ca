"""Pydantic -> structural schema, and the CRDs built from it."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, Field

from spatialjoin_contracts import samples
from spatialjoin_contracts.crd_generate import job_crd, pool_crd
from spatialjoin_contracts.crd_schema import UnsupportedSchema, structural_schema
from spatialjoin_contracts.models import SpatialJoinJobSpec, WorkerPoolSpec

pytestmark = pytest.mark.unit

FORBIDDEN = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "const", "uniqueItems"}


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """The apiserver's structural defaulting: absent property -> default, then recurse."""
    if isinstance(value, dict) and "properties" in schema:
        for name, prop in schema["properties"].items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
        for name, item in value.items():
            if name in schema["properties"]:
                value[name] = apply_defaults(item, schema["properties"][name])
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("crd", [job_crd(), pool_crd()], ids=["job", "pool"])
def test_schemas_are_structural(crd: dict[str, Any]) -> None:
    for path, node in _nodes(_schema(crd)):
        assert "type" in node, f"{path} has no type"
        assert not FORBIDDEN & node.keys(), f"{path} uses {FORBIDDEN & node.keys()}"
        assert node.get("additionalProperties") is not False, path
        if node["type"] == "object" and "properties" in node:
            assert set(node.get("required", [])) <= set(node["properties"]), path
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), path


@pytest.mark.parametrize("crd", [job_crd(), pool_crd()], ids=["job", "pool"])
def test_every_spec_field_is_described(crd: dict[str, Any]) -> None:
    spec = _schema(crd)["properties"]["spec"]
    for path, node in _nodes(spec):
        if path and not path.endswith("[]"):
            assert node.get("description"), f"spec{path} has no description"


@pytest.mark.parametrize(
    ("model", "minimal"),
    [(WorkerPoolSpec, samples.pool_spec()), (SpatialJoinJobSpec, samples.job_spec())],
    ids=["pool", "job"],
)
def test_server_side_defaults_equal_the_model_defaults(
    model: type[BaseModel], minimal: dict[str, Any]
) -> None:
    schema = structural_schema(model)
    defaulted = apply_defaults(copy.deepcopy(minimal), schema)
    parsed = model.model_validate(minimal)
    assert defaulted == parsed.model_dump(by_alias=True, exclude_none=True, mode="json")


@pytest.mark.parametrize(
    ("path", "keyword", "value"),
    [
        ("spec.concurrency", "default", 8),
        ("spec.concurrency", "minimum", 1),
        ("spec.maxHeapMb", "default", 4096),
        ("spec.broker.acks", "enum", ["all", "1", "0"]),
        ("spec.escalation", "default", {}),
        ("spec.escalation.p3.latencySeconds", "exclusiveMinimum", True),
        ("spec.escalation.p3.latencySeconds", "minimum", 0),
        ("spec.partitionMap", "x-kubernetes-list-map-keys", ["name"]),
        ("spec.partitionMap", "minItems", 1),
        ("spec.partitionMap[].bbox.minLat", "minimum", -90),
        ("spec.partitionMap[].bbox.maxLon", "maximum", 180),
        ("spec", "required", ["image", "broker", "database", "storage", "partitionMap"]),
        ("status.escalations", "maxItems", 20),
        ("status.conditions[].lastTransitionTime", "format", "date-time"),
    ],
)
def test_pool_schema_keywords(path: str, keyword: str, value: Any) -> None:
    assert _at(_schema(pool_crd()), path)[keyword] == value


@pytest.mark.parametrize(
    ("path", "keyword", "value"),
    [
        ("spec.sla.deadlineSeconds", "default", 90),
        ("spec.sla", "default", {}),
        ("spec.retry.maxRetries", "default", 3),
        ("spec.output.compression", "enum", ["zstd", "snappy"]),
        ("spec.output.contract", "enum", ["v2.1", "v2.0"]),
        ("spec.source.predicate.type", "enum", ["intersects", "dwithin"]),
        ("spec.partitions", "x-kubernetes-list-type", "set"),
        ("spec", "required", ["workerPoolRef", "source", "output"]),
        (
            "status.phase",
            "enum",
            ["Pending", "Queued", "Running", "Succeeded", "Failed", "Suspended"],
        ),
        ("status.conditions[].status", "enum", ["True", "False", "Unknown"]),
    ],
)
def test_job_schema_keywords(path: str, keyword: str, value: Any) -> None:
    assert _at(_schema(job_crd()), path)[keyword] == value


def _at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in path.split("."):
        name, _, _rest = part.partition("[]")
        node = node["properties"][name]
        if part.endswith("[]"):
            node = node["items"]
    return node


def test_optional_fields_are_neither_required_nor_null_defaulted() -> None:
    spec = _schema(job_crd())["properties"]["spec"]
    assert "traceId" not in spec["required"]
    assert "default" not in spec["properties"]["traceId"]


def test_subresources_and_printer_columns() -> None:
    job_version = job_crd()["spec"]["versions"][0]
    pool_version = pool_crd()["spec"]["versions"][0]
    assert job_version["subresources"] == {"status": {}}
    assert pool_version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas.min",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    job_columns = [
        c["name"] for c in job_version["additionalPrinterColumns"] if "priority" not in c
    ]
    assert job_columns == ["Phase", "Partitions", "Rows", "SLA", "Age"]
    for crd in (job_crd(), pool_crd()):
        for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
            root, _, rest = column["jsonPath"].lstrip(".").partition(".")
            if root in ("spec", "status"):  # the column shows a field the schema defines
                assert _at(_schema(crd), f"{root}.{rest}")


def test_names_and_scope() -> None:
    for crd, plural in ((job_crd(), "spatialjoinjobs"), (pool_crd(), "workerpools")):
        assert crd["metadata"]["name"] == f"{plural}.spatialjoin.io"
        assert crd["spec"]["scope"] == "Namespaced"
        assert crd["spec"]["versions"][0]["name"] == "v1alpha1"


class _Union(BaseModel):
    value: int | str


class _Inner(BaseModel):
    a: int = 1


class _BadDefault(BaseModel):
    inner: _Inner = _Inner(a=2)


class _Exclusive(BaseModel):
    ratio: float = Field(default=0.5, gt=0, lt=1)


def test_unions_are_refused() -> None:
    with pytest.raises(UnsupportedSchema, match="Optional"):
        structural_schema(_Union)


def test_object_default_that_the_server_cannot_reproduce_is_refused() -> None:
    with pytest.raises(UnsupportedSchema, match="differs"):
        structural_schema(_BadDefault)


def test_exclusive_bounds_become_openapi_3_0_booleans() -> None:
    ratio = structural_schema(_Exclusive)["properties"]["ratio"]
    assert ratio["minimum"] == 0 and ratio["exclusiveMinimum"] is True
    assert ratio["maximum"] == 1 and ratio["exclusiveMaximum"] is True


class _EmptyDefault(BaseModel):
    note: str = ""


def test_empty_string_defaults_are_refused_because_kubernetes_1_20_reads_them_as_null() -> None:
    with pytest.raises(UnsupportedSchema, match="empty-string"):
        structural_schema(_EmptyDefault)
