"""Check a written result file's footer against its contract; report every deviation.

Only the footer is read (schema, key-value metadata, row groups), so a worker
can validate the buffer it just wrote, and an auditor can validate an object
in storage from its last few kilobytes.  Any deviation is schema drift: the
worker sends the task to the dead-letter topic and the operator opens P1.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from .models import ContractVersion
from .models.common import Compression
from .result_schema import (
    EPSG_4326_PROJJSON,
    GEOMETRY_COLUMN,
    GEOPARQUET_VERSION,
    KEY_CONTRACT,
    KEY_GEO,
    KEY_PARTITION_KEY,
    KEY_ROW_COUNT,
    KEY_TRACE_ID,
    METADATA_KEYS,
    decode_metadata,
    geo_covering,
    result_schema,
)


@dataclass(frozen=True)
class Deviation:
    """One way the file differs from the contract."""

    code: str
    """missing-column, unexpected-column, column-order, column-type, column-nullability,
    metadata-missing, metadata-mismatch, geo-invalid, row-count, compression."""
    where: str
    """Column name or metadata key (``geo.columns.geometry.crs`` for nested ones)."""
    message: str

    def __str__(self) -> str:
        return f"{self.code} {self.where}: {self.message}"


def validate_parquet(
    source: str | IO[bytes] | pa.NativeFile,
    contract: ContractVersion,
    *,
    trace_id: str | None = None,
    partition_key: str | None = None,
    compression: Compression | None = None,
) -> list[Deviation]:
    """Read the footer of ``source`` (path, file object or Arrow buffer reader) and validate it."""
    return validate_metadata(
        pq.read_metadata(source),
        contract,
        trace_id=trace_id,
        partition_key=partition_key,
        compression=compression,
    )


def validate_metadata(
    meta: pq.FileMetaData,
    contract: ContractVersion,
    *,
    trace_id: str | None = None,
    partition_key: str | None = None,
    compression: Compression | None = None,
) -> list[Deviation]:
    """Every deviation of a footer from ``contract``; expected values are checked when given."""
    kv = decode_metadata(meta.metadata)
    deviations = check_columns(meta.schema.to_arrow_schema(), contract)
    deviations += _check_kv(kv, contract, trace_id, partition_key, meta.num_rows)
    deviations += _check_arrow_copy(meta.metadata or {}, kv)
    if compression is not None:
        deviations += _check_compression(meta, compression)
    return deviations


def check_columns(actual: pa.Schema, contract: ContractVersion) -> list[Deviation]:
    """Names, order, types and nullability of the columns."""
    expected = result_schema(contract)
    out: list[Deviation] = []
    actual_names = list(actual.names)
    for field in expected:
        if field.name not in actual_names:
            out.append(Deviation("missing-column", field.name, f"column of type {field.type}"))
            continue
        got = actual.field(field.name)
        if not got.type.equals(field.type):
            out.append(
                Deviation(
                    "column-type", field.name, f"type is {got.type}, contract says {field.type}"
                )
            )
        if got.nullable != field.nullable:
            want = "nullable" if field.nullable else "not null"
            out.append(Deviation("column-nullability", field.name, f"must be {want}"))
    for name in actual_names:
        if name not in expected.names:
            out.append(
                Deviation("unexpected-column", name, f"not part of contract {contract.value}")
            )
    common = [n for n in actual_names if n in expected.names]
    if common != [n for n in expected.names if n in actual_names]:
        out.append(
            Deviation("column-order", "*", f"order is {common}, contract says {expected.names}")
        )
    return out


def _check_kv(
    kv: Mapping[str, str],
    contract: ContractVersion,
    trace_id: str | None,
    partition_key: str | None,
    num_rows: int,
) -> list[Deviation]:
    out = [
        Deviation("metadata-missing", key, "required key-value metadata is absent")
        for key in METADATA_KEYS
        if key not in kv
    ]
    expected = {KEY_CONTRACT: contract.value, KEY_TRACE_ID: trace_id}
    expected |= {KEY_PARTITION_KEY: partition_key}
    for key, want in expected.items():
        if want is not None and key in kv and kv[key] != want:
            out.append(Deviation("metadata-mismatch", key, f"is {kv[key]!r}, expected {want!r}"))
    if KEY_ROW_COUNT in kv and kv[KEY_ROW_COUNT] != str(num_rows):
        out.append(
            Deviation(
                "row-count",
                KEY_ROW_COUNT,
                f"says {kv[KEY_ROW_COUNT]!r}, the file has {num_rows} rows",
            )
        )
    if KEY_GEO in kv:
        out += check_geo(kv[KEY_GEO], contract)
    return out


def check_geo(text: str, contract: ContractVersion) -> list[Deviation]:
    """The GeoParquet ``geo`` metadata: version, primary column, WKB, EPSG:4326, covering."""
    try:
        geo = json.loads(text)
    except json.JSONDecodeError as exc:
        return [Deviation("geo-invalid", "geo", f"is not JSON: {exc}")]
    if not isinstance(geo, dict):
        return [Deviation("geo-invalid", "geo", "must be a JSON object")]
    out: list[Deviation] = []

    def want(where: str, actual: Any, expected: Any) -> None:
        if actual != expected:
            out.append(Deviation("geo-invalid", where, f"is {actual!r}, expected {expected!r}"))

    want("geo.version", geo.get("version"), GEOPARQUET_VERSION[contract])
    want("geo.primary_column", geo.get("primary_column"), GEOMETRY_COLUMN)
    columns = geo.get("columns")
    column = columns.get(GEOMETRY_COLUMN) if isinstance(columns, dict) else None
    if not isinstance(column, dict):
        out.append(Deviation("geo-invalid", "geo.columns.geometry", "is missing"))
        return out
    where = "geo.columns.geometry"
    want(f"{where}.encoding", column.get("encoding"), "WKB")
    if not isinstance(column.get("geometry_types"), list):
        out.append(Deviation("geo-invalid", f"{where}.geometry_types", "must be a list"))
    crs = column.get("crs")
    crs_id = crs.get("id") if isinstance(crs, dict) else None
    want(f"{where}.crs.id", crs_id, EPSG_4326_PROJJSON["id"])
    bbox = column.get("bbox")
    if bbox is not None and not (
        isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)
    ):
        out.append(Deviation("geo-invalid", f"{where}.bbox", "must be [xmin, ymin, xmax, ymax]"))
    covering = column.get("covering")
    if contract is ContractVersion.V2_1:
        want(f"{where}.covering", covering, geo_covering())
    elif covering is not None:
        out.append(Deviation("geo-invalid", f"{where}.covering", "is not part of GeoParquet 1.0"))
    return out


def _check_arrow_copy(raw: Mapping[bytes, bytes], kv: Mapping[str, str]) -> list[Deviation]:
    """A stored Arrow schema (ARROW:schema) must not show Arrow readers other metadata."""
    encoded = raw.get(b"ARROW:schema")
    if encoded is None:
        return []
    try:
        stored = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(encoded)))
    except (ValueError, pa.ArrowInvalid) as exc:
        return [Deviation("metadata-mismatch", "ARROW:schema", f"cannot be read: {exc}")]
    seen = decode_metadata(stored.metadata)
    return [
        Deviation(
            "metadata-mismatch",
            key,
            f"Arrow readers see {seen.get(key)!r} (ARROW:schema), others {kv[key]!r}",
        )
        for key in METADATA_KEYS
        if key in kv and seen.get(key) != kv[key]
    ]


def _check_compression(meta: pq.FileMetaData, compression: Compression) -> list[Deviation]:
    wanted = compression.value.upper()
    found: dict[str, str] = {}
    for rg in range(meta.num_row_groups):
        group = meta.row_group(rg)
        for col in range(group.num_columns):
            chunk = group.column(col)
            if chunk.compression != wanted:
                found.setdefault(chunk.path_in_schema, chunk.compression)
    return [
        Deviation("compression", path, f"is {codec}, expected {wanted}")
        for path, codec in sorted(found.items())
    ]
