"""Result file contracts v2.1 and v2.0: Parquet columns, key-value metadata, GeoParquet.

One file per (traceId, partition) at ``{uriPrefix}/{traceId}/{partition}.parquet``,
rows sorted by (domain_id, feature_id) so that a rewrite is byte-identical.

v2.0 (GeoParquet 1.0.0), the columns every reader relies on:

    partition_key  string  not null  spatial partition the row was joined in
    domain_id      int64   not null  polygon id (domain A)
    feature_id     int64   not null  point id (domain B)
    geometry       binary  not null  WKB, EPSG:4326, lon/lat order: ST_Intersection(a.geom,
                                     b.geom) for intersects, the point b.geom for dwithin

v2.1 (GeoParquet 1.1.0) = v2.0's columns, same names, types, nullability and
order, followed by:

    trace_id               string  not null  the job's idempotency key
    geometry_bbox          struct<xmin, ymin, xmax, ymax: double not null>  not null
                                             GeoParquet 1.1 bbox covering of geometry
    domain_geometry_valid  bool    not null  ST_IsValid(a.geom); false rows were joined
                                             after ST_MakeValid, reported, not dropped

So v2.0 is a strict subset of v2.1: a v2.0 reader projecting its four
columns reads v2.1 files unchanged, and rolling back to v2.0 (P1) drops only
columns no v2.0 reader knows.  Both carry the same key-value metadata:
``spatialjoin.contract``, ``spatialjoin.trace_id``, ``spatialjoin.partition_key``,
``spatialjoin.row_count`` (so a restore can rebuild spatial_join_results from
the footer) and ``geo``.  No timestamps: the file depends only on its rows.

Write with :func:`writer_options`: ``store_schema=False`` keeps the Arrow
schema copy (frozen at open time) out of the footer, so the metadata added at
close with ``ParquetWriter.add_key_value_metadata(file_metadata(...))`` is the
single truth every reader, Arrow or not, sees.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import pyarrow as pa

from .models import BBox, ContractVersion
from .models.common import Compression

GEOMETRY_COLUMN: Final = "geometry"
BBOX_COLUMN: Final = "geometry_bbox"

KEY_CONTRACT: Final = "spatialjoin.contract"
KEY_TRACE_ID: Final = "spatialjoin.trace_id"
KEY_PARTITION_KEY: Final = "spatialjoin.partition_key"
KEY_ROW_COUNT: Final = "spatialjoin.row_count"
KEY_GEO: Final = "geo"
METADATA_KEYS: Final = (KEY_CONTRACT, KEY_TRACE_ID, KEY_PARTITION_KEY, KEY_ROW_COUNT, KEY_GEO)

GEOPARQUET_VERSION: Final = {ContractVersion.V2_0: "1.0.0", ContractVersion.V2_1: "1.1.0"}
SORT_COLUMNS: Final = ("domain_id", "feature_id")
BBOX_AXES: Final = ("xmin", "ymin", "xmax", "ymax")

# PROJJSON of EPSG:4326 (WGS 84). GeoParquet's default CRS is OGC:CRS84; the
# contract names EPSG:4326 explicitly. Coordinates stay (lon, lat) in WKB, as
# GeoParquet requires whatever the CRS axis order says.
EPSG_4326_PROJJSON: Final[dict[str, Any]] = {
    "type": "GeographicCRS",
    "name": "WGS 84",
    "datum": {
        "type": "GeodeticReferenceFrame",
        "name": "World Geodetic System 1984",
        "ellipsoid": {
            "name": "WGS 84",
            "semi_major_axis": 6378137,
            "inverse_flattening": 298.257223563,
        },
    },
    "coordinate_system": {
        "subtype": "ellipsoidal",
        "axis": [
            {
                "name": "Geodetic latitude",
                "abbreviation": "Lat",
                "direction": "north",
                "unit": "degree",
            },
            {
                "name": "Geodetic longitude",
                "abbreviation": "Lon",
                "direction": "east",
                "unit": "degree",
            },
        ],
    },
    "id": {"authority": "EPSG", "code": 4326},
}

_BBOX_TYPE: Final = pa.struct(
    [pa.field(name, pa.float64(), nullable=False) for name in BBOX_AXES]
)

_V2_0_FIELDS: Final = [
    pa.field("partition_key", pa.string(), nullable=False),
    pa.field("domain_id", pa.int64(), nullable=False),
    pa.field("feature_id", pa.int64(), nullable=False),
    pa.field(GEOMETRY_COLUMN, pa.binary(), nullable=False),
]
_V2_1_EXTRA_FIELDS: Final = [
    pa.field("trace_id", pa.string(), nullable=False),
    pa.field(BBOX_COLUMN, _BBOX_TYPE, nullable=False),
    pa.field("domain_geometry_valid", pa.bool_(), nullable=False),
]


def result_schema(contract: ContractVersion) -> pa.Schema:
    """The Arrow schema of a result file (without key-value metadata)."""
    if contract is ContractVersion.V2_0:
        return pa.schema(_V2_0_FIELDS)
    return pa.schema(_V2_0_FIELDS + _V2_1_EXTRA_FIELDS)


def geo_covering() -> dict[str, Any]:
    """The GeoParquet 1.1 ``covering`` of the geometry column (v2.1 only): the bbox struct."""
    return {"bbox": {axis: [BBOX_COLUMN, axis] for axis in BBOX_AXES}}


def geo_metadata(contract: ContractVersion, bbox: BBox | None = None) -> dict[str, Any]:
    """The GeoParquet ``geo`` metadata; ``bbox`` is the extent of the rows, when known."""
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": [],
        "crs": EPSG_4326_PROJJSON,
        "edges": "planar",
    }
    if bbox is not None:
        column["bbox"] = list(bbox.as_tuple())
    if contract is ContractVersion.V2_1:
        column["covering"] = geo_covering()
    return {
        "version": GEOPARQUET_VERSION[contract],
        "primary_column": GEOMETRY_COLUMN,
        "columns": {GEOMETRY_COLUMN: column},
    }


def file_metadata(
    contract: ContractVersion,
    *,
    trace_id: str,
    partition_key: str,
    row_count: int,
    bbox: BBox | None = None,
) -> dict[str, str]:
    """All key-value metadata of a result file, to add before closing the writer."""
    return {
        KEY_CONTRACT: contract.value,
        KEY_TRACE_ID: trace_id,
        KEY_PARTITION_KEY: partition_key,
        KEY_ROW_COUNT: str(row_count),
        KEY_GEO: json.dumps(geo_metadata(contract, bbox), sort_keys=True, separators=(",", ":")),
    }


def writer_options(compression: Compression) -> dict[str, Any]:
    """Keyword arguments for ``pyarrow.parquet.ParquetWriter`` (besides sink and schema)."""
    return {
        "compression": compression.value,
        "store_schema": False,
        "write_statistics": True,
        "use_dictionary": ["partition_key", "trace_id"],
    }


def result_uri(uri_prefix: str, trace_id: str, partition_key: str) -> str:
    """Deterministic object URI of one partition's result."""
    return f"{uri_prefix.rstrip('/')}/{trace_id}/{partition_key}.parquet"


def decode_metadata(raw: Mapping[bytes, bytes] | None) -> dict[str, str]:
    """Parquet key-value metadata (bytes) as text, for reading it back."""
    items = (raw or {}).items()
    return {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in items}
