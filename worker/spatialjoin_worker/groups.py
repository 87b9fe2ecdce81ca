"""Unpack the join's per-polygon rows into one Arrow row per match, with numpy.

Each query row carries a polygon's matches as packed big-endian int8 ids and
a collection WKB of their geometries (both ordered by feature id). The WKB of
a collection is a 9-byte header followed by each member's own WKB, so the
members' bytes are exactly what ST_AsBinary gives for each geometry; points
(21 bytes each, little-endian) are cut out with a stride, anything else goes
through shapely.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import pyarrow as pa
import shapely

from .point_wkb import POINT_WKB_BYTES as _POINT_WKB

_HEADER = 9  # byte order (1) + type (4) + member count (4)
_WKB_MULTIPOINT = 4


class MalformedGroup(ValueError):
    """A row whose packed ids and geometries disagree: a query bug, never data loss."""


Row = tuple[int, bool, int, bytes, bytes]

MATCHES_PER_POLYGON: Final = 40
"""About how many points a polygon matches on the sample data: a batch of
``batch_rows`` matches is fetched as ``batch_rows // MATCHES_PER_POLYGON``
polygons. Both engines cut batches (Parquet row groups) the same way, so they
write byte-identical files."""


def polygons_per_batch(batch_rows: int) -> int:
    return max(1, batch_rows // MATCHES_PER_POLYGON)


def arrow_type(oid: int) -> pa.DataType:
    """The Arrow type of a PostgreSQL column, by type oid. The file keeps the
    source's real types so that a drifted source (an int4 id column, say) shows up
    as a contract deviation instead of being silently coerced."""
    return _ARROW_TYPES.get(oid, pa.string())


_ARROW_TYPES: Final[dict[int, pa.DataType]] = {
    16: pa.bool_(), 17: pa.binary(), 20: pa.int64(), 21: pa.int16(), 23: pa.int32(),
    25: pa.string(), 700: pa.float32(), 701: pa.float64(), 1043: pa.string(),
}


def type_oid_of(arrow: pa.DataType) -> int:
    """arrow_type's inverse, for columns read from GeoParquet: the PostgreSQL type oid
    that arrow_type maps back to ``arrow`` (text for types it does not know, as there)."""
    for oid, known in _ARROW_TYPES.items():
        if known == arrow:
            return oid
    return 25


def _is_ndr_multipoint(wkb: bytes) -> bool:
    return wkb[0] == 1 and int.from_bytes(wkb[1:5], "little") == _WKB_MULTIPOINT


def _members_generic(wkb: bytes) -> tuple[list[bytes], np.ndarray]:
    """Member WKBs and their bounds for a collection that is not all points."""
    parts = shapely.get_parts(shapely.from_wkb(wkb))
    return ([bytes(w) for w in shapely.to_wkb(parts, byte_order=1, output_dimension=2)],
            shapely.bounds(parts))


def unpack(rows: Sequence[Row], schema: pa.Schema) -> pa.RecordBatch:
    """One record per (polygon, match) in (domain_id, feature_id) order."""
    counts = np.fromiter((len(r[3]) // 8 for r in rows), dtype=np.int64, count=len(rows))
    feature_ids = np.frombuffer(b"".join(r[3] for r in rows), dtype=">i8").astype(np.int64)
    domain_ids = np.repeat(np.fromiter((r[0] for r in rows), np.int64, len(rows)), counts)
    valid = np.repeat(np.fromiter((r[1] for r in rows), np.bool_, len(rows)), counts)
    if all(_is_ndr_multipoint(r[4]) for r in rows):
        geometry, bounds = _points(rows, int(counts.sum()))
    else:
        geometry, bounds = _mixed(rows)
    if len(geometry) != len(feature_ids):
        raise MalformedGroup(f"{len(feature_ids)} ids but {len(geometry)} geometries")
    arrays = [pa.array(domain_ids).cast(schema.field("domain_id").type), pa.array(feature_ids)
              .cast(schema.field("feature_id").type), geometry,
              *[pa.array(bounds[:, i]) for i in range(4)], pa.array(valid)]
    return pa.record_batch(arrays, schema=schema)


def _points(rows: Sequence[Row], total: int) -> tuple[pa.Array, np.ndarray]:
    body = b"".join(r[4][_HEADER:] for r in rows)
    if len(body) != total * _POINT_WKB:
        raise MalformedGroup(f"{total} points but {len(body)} bytes of point WKB")
    offsets = np.arange(0, (total + 1) * _POINT_WKB, _POINT_WKB, dtype=np.int32)
    geometry = pa.Array.from_buffers(pa.binary(), total,
                                     [None, pa.py_buffer(offsets), pa.py_buffer(body)])
    xy = np.frombuffer(body, dtype=np.uint8).reshape(total, _POINT_WKB)[:, 5:21]
    coords = np.ascontiguousarray(xy).view("<f8").reshape(total, 2)
    return geometry, np.column_stack([coords[:, 0], coords[:, 1], coords[:, 0], coords[:, 1]])


def _mixed(rows: Sequence[Row]) -> tuple[pa.Array, np.ndarray]:
    wkbs: list[bytes] = []
    bounds: list[np.ndarray] = []
    for row in rows:
        members, member_bounds = _members_generic(row[4])
        wkbs.extend(members)
        bounds.append(member_bounds)
    stacked = np.vstack(bounds) if bounds else np.empty((0, 4))
    return pa.array(wkbs, pa.binary()), stacked


def raw_schema(domain_id: pa.DataType, feature_id: pa.DataType) -> pa.Schema:
    """The engine's row schema; the id types are the source columns' own."""
    return pa.schema([
        pa.field("domain_id", domain_id), pa.field("feature_id", feature_id),
        pa.field("geometry", pa.binary()), pa.field("xmin", pa.float64()),
        pa.field("ymin", pa.float64()), pa.field("xmax", pa.float64()),
        pa.field("ymax", pa.float64()), pa.field("domain_geometry_valid", pa.bool_())])
