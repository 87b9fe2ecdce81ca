"""The join SQL quotes identifiers from the spec and binds every value."""

from __future__ import annotations

import pytest

from spatialjoin_contracts.models import BBox
from spatialjoin_contracts.models.job import JoinSource
from spatialjoin_worker.query import build_join
from spatialjoin_worker.settings import InvalidGeometryPolicy

pytestmark = pytest.mark.unit

BOX = BBox(min_lon=-10, min_lat=40, max_lon=-5, max_lat=45)


def _source(predicate: dict[str, object] | None = None) -> JoinSource:
    raw: dict[str, object] = {
        "polygons": {"table": "gis.Parcels", "idColumn": "parcel_id"},
        "points": {"table": "events"},
    }
    if predicate:
        raw["predicate"] = predicate
    return JoinSource.model_validate(raw)


def test_identifiers_are_quoted_and_values_bound() -> None:
    query = build_join(_source(), "p01", BOX, InvalidGeometryPolicy.MAKE_VALID)
    text = query.statement.as_string(None)
    assert '"gis"."Parcels"' in text
    assert '"parcel_id"' in text and '"events"' in text
    assert query.params == ("p01", -10.0, 40.0, -5.0, 45.0)
    assert "p01" not in text and "-10" not in text
    assert "ORDER BY a.id" in text and "ORDER BY b.\"id\"" in text


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [(InvalidGeometryPolicy.MAKE_VALID, "AND TRUE"),
     (InvalidGeometryPolicy.SKIP, 'AND ST_IsValid(p."geom")')],
)
def test_invalid_geometry_policy(policy: InvalidGeometryPolicy, fragment: str) -> None:
    text = build_join(_source(), "p01", BOX, policy).statement.as_string(None)
    assert fragment in text


def test_points_skip_the_overlay_and_dwithin_prefilters() -> None:
    intersects = build_join(_source(), "p01", BOX, InvalidGeometryPolicy.MAKE_VALID)
    assert "GeometryType(b.\"geom\") = 'POINT' THEN b.\"geom\"" in (
        intersects.statement.as_string(None))
    dwithin = build_join(_source({"type": "dwithin", "distanceMeters": 500}), "p01", BOX,
                         InvalidGeometryPolicy.MAKE_VALID)
    text = dwithin.statement.as_string(None)
    assert "::geography" in text and "ST_Intersection" not in text
    assert dwithin.params[-1] == 500.0
    assert isinstance(dwithin.params[-2], float) and dwithin.params[-2] > 500 / 111_320
