"""Contract choice, heap cap, failure classes, key derivation, result shaping, hashing."""

from __future__ import annotations

import hashlib
import io

import psycopg
import pyarrow as pa
import pytest
from psycopg import errors as pg_errors

from spatialjoin_contracts.models import BBox, ContractVersion
from spatialjoin_contracts.result_schema import result_schema, result_uri
from spatialjoin_worker.contract_choice import effective_contract
from spatialjoin_worker.failures import FailureClass, classify
from spatialjoin_worker.materialize import (
    HashingSink,
    result_arrow_schema,
    result_batch,
    s3_path,
)
from spatialjoin_worker.memory import HeapCapExceeded, HeapGuard
from spatialjoin_worker.query import degrees_for

pytestmark = pytest.mark.unit

V20, V21 = ContractVersion.V2_0, ContractVersion.V2_1


@pytest.mark.parametrize(
    ("requested", "pool", "expected"),
    [(V21, None, V21), (V20, None, V20), (V21, V20, V20), (V20, V21, V20), (V21, V21, V21)],
)
def test_effective_contract(requested: ContractVersion, pool: ContractVersion | None,
                            expected: ContractVersion) -> None:
    assert effective_contract(requested, pool) is expected


@pytest.mark.parametrize(("rss_mb", "cap_mb", "fails"), [(100, 200, False), (201, 200, True)])
def test_heap_guard(rss_mb: int, cap_mb: int, fails: bool) -> None:
    guard = HeapGuard(cap_mb * 2**20, read=lambda: rss_mb * 2**20)
    if fails:
        with pytest.raises(HeapCapExceeded, match=r"resident 201 MiB > maxHeapMb 200 MiB"):
            guard.check("streaming")
    else:
        assert guard.check("streaming") == rss_mb * 2**20


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (psycopg.OperationalError("connection lost"), FailureClass.TRANSIENT),
        (pg_errors.SerializationFailure(), FailureClass.TRANSIENT),
        (pg_errors.QueryCanceled(), FailureClass.TRANSIENT),
        (pg_errors.UndefinedTable(), FailureClass.PERMANENT),
        (OSError("S3 503"), FailureClass.TRANSIENT),
        (HeapCapExceeded("cap"), FailureClass.PERMANENT),
        (ValueError("bug"), FailureClass.PERMANENT),
    ],
)
def test_classify(exc: BaseException, expected: FailureClass) -> None:
    assert classify(exc) is expected


def test_object_key_is_deterministic() -> None:
    uri = result_uri("s3://bucket/results/", "trace-1", "p03")
    assert uri == "s3://bucket/results/trace-1/p03.parquet"
    assert s3_path(uri) == "bucket/results/trace-1/p03.parquet"
    with pytest.raises(ValueError, match="not an s3:// URI"):
        s3_path("/tmp/x.parquet")


def _raw(id_type: pa.DataType | None = None) -> pa.RecordBatch:
    id_type = id_type or pa.int64()
    return pa.record_batch({
        "domain_id": pa.array([1, 2], id_type), "feature_id": pa.array([7, 8], pa.int64()),
        "geometry": pa.array([b"\x01", b"\x02"], pa.binary()),
        "xmin": [0.0, 1.0], "ymin": [0.0, 1.0], "xmax": [0.5, 1.5], "ymax": [0.5, 1.5],
        "domain_geometry_valid": [True, False]})


@pytest.mark.parametrize("contract", [V20, V21])
def test_result_shape_matches_contract(contract: ContractVersion) -> None:
    raw = _raw()
    schema = result_arrow_schema(raw.schema, contract)
    batch = result_batch(raw, contract, trace_id="t", partition_key="p00").cast(schema)
    assert schema.equals(result_schema(contract))
    assert batch.column("partition_key").to_pylist() == ["p00", "p00"]


def test_drifted_source_type_is_kept_not_coerced() -> None:
    schema = result_arrow_schema(_raw(pa.int32()).schema, V21)
    assert schema.field("domain_id").type == pa.int32()


def test_hashing_sink_counts_and_hashes_what_it_forwards() -> None:
    inner = io.BytesIO()
    inner.close = lambda: None  # type: ignore[method-assign]  # keep the buffer readable
    sink = HashingSink(inner)
    sink.write(b"hello ")
    sink.write(memoryview(b"world"))
    sink.close()
    assert inner.getvalue() == b"hello world"
    assert sink.size == 11
    assert sink.hexdigest == hashlib.sha256(b"hello world").hexdigest()


@pytest.mark.parametrize(("lat", "at_least"), [(0.0, 1.0), (60.0, 2.0)])
def test_dwithin_prefilter_is_never_shorter_than_the_distance(lat: float,
                                                               at_least: float) -> None:
    bbox = BBox(min_lon=0, min_lat=lat - 1 if lat else 0, max_lon=1, max_lat=lat or 1)
    degrees = degrees_for(111_320.0, bbox)
    assert degrees >= at_least * 0.99
