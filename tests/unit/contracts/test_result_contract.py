"""Result schemas v2.1 / v2.0 and the validator of written files."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

from spatialjoin_contracts import result_schema as rs
from spatialjoin_contracts.contract_validator import check_geo, validate_parquet
from spatialjoin_contracts.models import BBox, Compression, ContractVersion

pytestmark = pytest.mark.unit

V20, V21 = ContractVersion.V2_0, ContractVersion.V2_1


def _columns(contract: ContractVersion, rows: int = 3) -> dict[str, list[Any]]:
    points = [shapely.Point(-100 + i, 30 + i) for i in range(rows)]
    cols: dict[str, list[Any]] = {
        "partition_key": ["p01"] * rows,
        "domain_id": list(range(1, rows + 1)),
        "feature_id": list(range(10, 10 + rows)),
        "geometry": [shapely.to_wkb(p) for p in points],
    }
    if contract is V21:
        cols["trace_id"] = ["t-1"] * rows
        cols["geometry_bbox"] = [
            dict(zip(("xmin", "ymin", "xmax", "ymax"), p.bounds, strict=True)) for p in points
        ]
        cols["domain_geometry_valid"] = [True] * rows
    return cols


def write(
    contract: ContractVersion,
    *,
    schema: pa.Schema | None = None,
    columns: dict[str, list[Any]] | None = None,
    metadata: dict[str, str] | None = None,
    options: dict[str, Any] | None = None,
    rows: int = 3,
) -> io.BytesIO:
    """A result file written the way the contract says, unless told otherwise."""
    schema = schema or rs.result_schema(contract)
    buf = io.BytesIO()
    writer = pq.ParquetWriter(buf, schema, **(options or rs.writer_options(Compression.ZSTD)))
    writer.write_table(pa.table(columns or _columns(contract, rows), schema=schema))
    if metadata is None:
        metadata = rs.file_metadata(
            contract,
            trace_id="t-1",
            partition_key="p01",
            row_count=rows,
            bbox=BBox(min_lon=-100, min_lat=30, max_lon=-98, max_lat=32),
        )
    writer.add_key_value_metadata(metadata)
    writer.close()
    buf.seek(0)
    return buf


def test_v2_0_is_a_strict_prefix_subset_of_v2_1() -> None:
    v20, v21 = rs.result_schema(V20), rs.result_schema(V21)
    assert len(v20) < len(v21)
    for index, field in enumerate(v20):
        assert v21.field(index).equals(field)
    assert set(rs.file_metadata(V20, trace_id="t", partition_key="p", row_count=0)) == set(
        rs.file_metadata(V21, trace_id="t", partition_key="p", row_count=0)
    )


def test_a_v2_0_reader_reads_a_v2_1_file() -> None:
    buf = write(V21)
    table = pq.read_table(buf, columns=rs.result_schema(V20).names)
    assert table.schema.remove_metadata().equals(rs.result_schema(V20))


@pytest.mark.parametrize("contract", [V20, V21])
def test_a_file_written_to_contract_has_no_deviation(contract: ContractVersion) -> None:
    buf = write(contract)
    assert (
        validate_parquet(
            buf, contract, trace_id="t-1", partition_key="p01", compression=Compression.ZSTD
        )
        == []
    )


@pytest.mark.parametrize("contract", [V20, V21])
def test_geo_metadata_is_geoparquet(contract: ContractVersion) -> None:
    meta = pq.read_metadata(write(contract)).metadata
    geo = json.loads(meta[b"geo"])
    assert geo["version"] == {V20: "1.0.0", V21: "1.1.0"}[contract]
    assert geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB"
    assert column["crs"]["id"] == {"authority": "EPSG", "code": 4326}
    assert column["bbox"] == [-100, 30, -98, 32]
    assert ("covering" in column) is (contract is V21)


def test_footer_carries_contract_trace_partition_and_row_count() -> None:
    meta = rs.decode_metadata(pq.read_metadata(write(V21, rows=5)).metadata)
    assert meta[rs.KEY_CONTRACT] == "v2.1"
    assert meta[rs.KEY_TRACE_ID] == "t-1"
    assert meta[rs.KEY_PARTITION_KEY] == "p01"
    assert meta[rs.KEY_ROW_COUNT] == "5"
    assert b"ARROW:schema" not in pq.read_metadata(write(V21)).metadata


def test_rewrites_are_byte_identical() -> None:
    assert write(V21).getvalue() == write(V21).getvalue()


def test_result_uri() -> None:
    assert rs.result_uri("s3://bkt/jobs/", "t-1", "p03") == "s3://bkt/jobs/t-1/p03.parquet"


def _drop(name: str) -> Callable[[ContractVersion], dict[str, Any]]:
    def build(contract: ContractVersion) -> dict[str, Any]:
        schema = rs.result_schema(contract)
        schema = schema.remove(schema.get_field_index(name))
        columns = _columns(contract)
        del columns[name]
        return {"schema": schema, "columns": columns}

    return build


def _retype(
    name: str, type_: pa.DataType, nullable: bool = False
) -> Callable[[ContractVersion], dict[str, Any]]:
    def build(contract: ContractVersion) -> dict[str, Any]:
        schema = rs.result_schema(contract)
        index = schema.get_field_index(name)
        schema = schema.set(index, pa.field(name, type_, nullable=nullable))
        return {"schema": schema}

    return build


def _wkt_geometry(contract: ContractVersion) -> dict[str, Any]:
    columns = _columns(contract)
    columns["geometry"] = [shapely.to_wkt(shapely.from_wkb(g)) for g in columns["geometry"]]
    return _retype("geometry", pa.string())(contract) | {"columns": columns}


def _extra(contract: ContractVersion) -> dict[str, Any]:
    schema = rs.result_schema(contract).append(pa.field("extra", pa.int32()))
    columns = _columns(contract) | {"extra": [1, 2, 3]}
    return {"schema": schema, "columns": columns}


def _reordered(contract: ContractVersion) -> dict[str, Any]:
    names = rs.result_schema(contract).names
    order = [names[1], names[0], *names[2:]]
    schema = pa.schema([rs.result_schema(contract).field(n) for n in order])
    return {"schema": schema}


def _meta(**changes: str | None) -> Callable[[ContractVersion], dict[str, Any]]:
    def build(contract: ContractVersion) -> dict[str, Any]:
        metadata = rs.file_metadata(contract, trace_id="t-1", partition_key="p01", row_count=3)
        for key, value in changes.items():
            real = key.replace("__", ".")
            if value is None:
                del metadata[real]
            else:
                metadata[real] = value
        return {"metadata": metadata}

    return build


def _geo(mutate: Callable[[dict[str, Any]], None]) -> Callable[[ContractVersion], Any]:
    def build(contract: ContractVersion) -> dict[str, Any]:
        geo = rs.geo_metadata(contract)
        mutate(geo)
        metadata = rs.file_metadata(contract, trace_id="t-1", partition_key="p01", row_count=3)
        return {"metadata": metadata | {"geo": json.dumps(geo)}}

    return build


DEVIATIONS: list[tuple[str, Callable[[ContractVersion], dict[str, Any]], str, str]] = [
    ("missing column", _drop("feature_id"), "missing-column", "feature_id"),
    ("wrong type", _retype("domain_id", pa.int32()), "column-type", "domain_id"),
    (
        "nullable",
        _retype("domain_id", pa.int64(), nullable=True),
        "column-nullability",
        "domain_id",
    ),
    ("geometry as WKT text", _wkt_geometry, "column-type", "geometry"),
    ("extra column", _extra, "unexpected-column", "extra"),
    ("order", _reordered, "column-order", "*"),
    (
        "contract key missing",
        _meta(spatialjoin__contract=None),
        "metadata-missing",
        "spatialjoin.contract",
    ),
    ("geo missing", _meta(geo=None), "metadata-missing", "geo"),
    (
        "wrong contract",
        _meta(spatialjoin__contract="v9"),
        "metadata-mismatch",
        "spatialjoin.contract",
    ),
    (
        "wrong trace",
        _meta(spatialjoin__trace_id="other"),
        "metadata-mismatch",
        "spatialjoin.trace_id",
    ),
    (
        "wrong partition",
        _meta(spatialjoin__partition_key="p02"),
        "metadata-mismatch",
        "spatialjoin.partition_key",
    ),
    ("wrong row count", _meta(spatialjoin__row_count="4"), "row-count", "spatialjoin.row_count"),
    ("geo not json", _meta(geo="{"), "geo-invalid", "geo"),
    (
        "geo wkt",
        _geo(lambda g: g["columns"]["geometry"].update(encoding="WKT")),
        "geo-invalid",
        "geo.columns.geometry.encoding",
    ),
    (
        "geo crs 3857",
        _geo(
            lambda g: g["columns"]["geometry"].update(
                crs={"id": {"authority": "EPSG", "code": 3857}}
            )
        ),
        "geo-invalid",
        "geo.columns.geometry.crs.id",
    ),
    (
        "geo primary",
        _geo(lambda g: g.update(primary_column="geom")),
        "geo-invalid",
        "geo.primary_column",
    ),
    (
        "geo bbox",
        _geo(lambda g: g["columns"]["geometry"].update(bbox=[1, 2])),
        "geo-invalid",
        "geo.columns.geometry.bbox",
    ),
    (
        "snappy instead of zstd",
        lambda c: {"options": rs.writer_options(Compression.SNAPPY)},
        "compression",
        "domain_id",
    ),
    (
        "arrow schema stored with stale metadata",
        lambda c: {
            "options": rs.writer_options(Compression.ZSTD) | {"store_schema": True},
            "schema": rs.result_schema(c).with_metadata({"spatialjoin.row_count": "0"}),
        },
        "metadata-mismatch",
        "spatialjoin.row_count",
    ),
]


@pytest.mark.parametrize("contract", [V20, V21])
@pytest.mark.parametrize(
    ("build", "code", "where"),
    [case[1:] for case in DEVIATIONS],
    ids=[case[0] for case in DEVIATIONS],
)
def test_each_deviation_is_reported(
    contract: ContractVersion,
    build: Callable[[ContractVersion], dict[str, Any]],
    code: str,
    where: str,
) -> None:
    buf = write(contract, **build(contract))
    deviations = validate_parquet(
        buf, contract, trace_id="t-1", partition_key="p01", compression=Compression.ZSTD
    )
    assert (code, where) in [(d.code, d.where) for d in deviations], deviations
    assert all(str(d).startswith(f"{d.code} {d.where}: ") for d in deviations)


def test_a_v2_1_file_checked_against_v2_0_reports_every_extra_column() -> None:
    deviations = validate_parquet(write(V21), V20)
    unexpected = {d.where for d in deviations if d.code == "unexpected-column"}
    assert unexpected == {"trace_id", "geometry_bbox", "domain_geometry_valid"}
    assert ("geo-invalid", "geo.columns.geometry.covering") in [
        (d.code, d.where) for d in deviations
    ]


def test_check_geo_rejects_non_objects() -> None:
    assert [d.where for d in check_geo("[]", V21)] == ["geo"]
