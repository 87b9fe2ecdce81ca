"""The vectorized engine's SQL, bookkeeping of invalid polygons, and refusals (no database)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from spatialjoin_contracts.models import BBox
from spatialjoin_contracts.models.job import JoinSource
from spatialjoin_contracts.task_message import JobIdentity, TaskMessage, TaskOutput
from spatialjoin_worker.failures import FailureClass, classify
from spatialjoin_worker.memory import HeapGuard
from spatialjoin_worker.settings import InvalidGeometryPolicy
from spatialjoin_worker.tiling import Box
from spatialjoin_worker.vector_source import (
    PolygonRows,
    features_query,
    points_query,
    polygons_query,
)
from spatialjoin_worker.vectorized_engine import UnsupportedPredicate, VectorizedEngine

pytestmark = pytest.mark.unit

BOX = BBox(min_lon=-10, min_lat=40, max_lon=-5, max_lat=45)


def _source(**predicate: Any) -> JoinSource:
    raw: dict[str, Any] = {"polygons": {"table": "gis.Parcels", "idColumn": "parcel_id"},
                           "points": {"table": "events", "geometryColumn": "Where"}}
    if predicate:
        raw["predicate"] = predicate
    return JoinSource.model_validate(raw)


def test_polygon_sql_quotes_identifiers_and_binds_values() -> None:
    query = polygons_query(_source(), "p01", BOX, InvalidGeometryPolicy.MAKE_VALID)
    text = query.statement.as_string(None)
    assert '"gis"."Parcels"' in text and '"parcel_id"' in text
    assert query.params == ("p01", -10.0, 40.0, -5.0, 45.0)
    assert "ST_MakeValid" in text and "WHEN TRUE THEN" in text
    assert "NOT ST_IsEmpty" in text and "IS NOT NULL" in text
    skip = polygons_query(_source(), "p01", BOX, InvalidGeometryPolicy.SKIP)
    assert "WHEN FALSE THEN" in skip.statement.as_string(None)


def test_point_sql_filters_other_types_only_for_untyped_columns() -> None:
    box = Box(1.0, 2.0, 3.0, 4.0)
    typed = points_query(_source(), box, typed_points=True).statement.as_string(None)
    untyped = points_query(_source(), box, typed_points=False)
    assert "GeometryType" not in typed and '"Where"' in typed
    assert "GeometryType(b.\"Where\") = 'POINT'" in untyped.statement.as_string(None)
    assert untyped.params == (1.0, 2.0, 3.0, 4.0)
    assert "<> 'POINT'" in features_query(_source(), box).statement.as_string(None)


def test_invalid_polygons_are_counted_and_skipped_by_policy() -> None:
    rows = PolygonRows(ids=np.array([9, 3, 7, 1], dtype=np.int64),
                       valid=np.array([False, True, False, True]),
                       wkbs=[None, b"a", b"c", b"d"], id_type_oid=20)
    assert rows.invalid_ids() == (2, [7, 9])
    ids, valid, wkbs = rows.joinable()
    assert ids.tolist() == [3, 7, 1] and valid.tolist() == [True, False, True]
    assert wkbs == [b"a", b"c", b"d"]


class _NoPool:
    def connection(self) -> Any:
        raise AssertionError("the database must not be touched")


def _task(source: JoinSource) -> TaskMessage:
    return TaskMessage(version=1, trace_id="t", job=JobIdentity(namespace="n", name="j", uid="u"),
                       partition_key="p01", kafka_partition=1, bbox=BOX, source=source,
                       output=TaskOutput.model_validate({
                           "uri": "s3://bucket/t/p01.parquet", "contract": "v2.1",
                           "compression": "zstd"}),
                       attempt=1, enqueued_at=datetime.now(UTC))


def test_dwithin_is_refused_with_a_clear_permanent_error() -> None:
    engine = VectorizedEngine(_NoPool(), batch_rows=100, statement_timeout_s=1,  # type: ignore[arg-type]
                              policy=InvalidGeometryPolicy.MAKE_VALID, heap=HeapGuard(2**30))
    task = _task(_source(type="dwithin", distanceMeters=50))
    with pytest.raises(UnsupportedPredicate, match="engine: postgis") as caught, \
            engine.join(task):
        pass
    assert classify(caught.value) is FailureClass.PERMANENT
