"""Write a partition's rows as contract-shaped Parquet on S3, hash them, validate the footer."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs

from spatialjoin_contracts.contract_validator import Deviation, validate_metadata
from spatialjoin_contracts.models import BBox, ContractVersion
from spatialjoin_contracts.models.common import Compression
from spatialjoin_contracts.result_schema import BBOX_COLUMN, file_metadata, writer_options

from .memory import HeapGuard


@dataclass(frozen=True)
class WrittenObject:
    uri: str
    rows: int
    bytes: int
    sha256: str
    deviations: list[Deviation]


class HashingSink:
    """A write-only file object that hashes and counts what it forwards to the object store."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._sha = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        self._sha.update(view)
        self.size += view.nbytes
        self._inner.write(view)
        return view.nbytes

    def flush(self) -> None:
        """Buffered by the object store client; nothing to do here."""

    def tell(self) -> int:
        return self.size

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
            self.closed = True

    @property
    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def s3_path(uri: str) -> str:
    """``s3://bucket/key`` → ``bucket/key`` as pyarrow's S3FileSystem wants it."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return uri[len("s3://"):]


def result_batch(raw: pa.RecordBatch, contract: ContractVersion, *, trace_id: str,
                 partition_key: str) -> pa.RecordBatch:
    """The contract's columns from the engine's raw columns (types kept as the source gave them)."""
    n = raw.num_rows
    columns: dict[str, pa.Array] = {
        "partition_key": pa.repeat(pa.scalar(partition_key, pa.string()), n),
        "domain_id": raw.column("domain_id"),
        "feature_id": raw.column("feature_id"),
        "geometry": raw.column("geometry"),
    }
    if contract is ContractVersion.V2_1:
        columns["trace_id"] = pa.repeat(pa.scalar(trace_id, pa.string()), n)
        columns[BBOX_COLUMN] = pa.StructArray.from_arrays(
            [raw.column(c) for c in ("xmin", "ymin", "xmax", "ymax")],
            fields=[pa.field(c, pa.float64(), nullable=False)
                    for c in ("xmin", "ymin", "xmax", "ymax")])
        columns["domain_geometry_valid"] = raw.column("domain_geometry_valid")
    return pa.record_batch(list(columns.values()), names=list(columns))


def result_arrow_schema(raw: pa.Schema, contract: ContractVersion) -> pa.Schema:
    """The file schema for a raw join schema: non-null columns, source types kept."""
    empty = pa.RecordBatch.from_pylist([], schema=raw)
    shaped = result_batch(empty, contract, trace_id="", partition_key="").schema
    return pa.schema([pa.field(f.name, f.type, nullable=False) for f in shaped])


def _extent(batch: pa.RecordBatch, current: list[float] | None) -> list[float] | None:
    if batch.num_rows == 0:
        return current
    found = [pc.min(batch.column("xmin")).as_py(), pc.min(batch.column("ymin")).as_py(),
             pc.max(batch.column("xmax")).as_py(), pc.max(batch.column("ymax")).as_py()]
    if current is None:
        return found
    return [min(current[0], found[0]), min(current[1], found[1]),
            max(current[2], found[2]), max(current[3], found[3])]


class Materializer:
    """Streams batches into one Parquet object whose key depends only on (traceId, partition)."""

    def __init__(self, filesystem: fs.FileSystem, *, row_group_rows: int,
                 heap: HeapGuard) -> None:
        self._fs = filesystem
        self._row_group_rows = row_group_rows
        self._heap = heap

    def write(self, uri: str, raw_schema: pa.Schema, batches: Iterable[pa.RecordBatch], *,
              contract: ContractVersion, compression: Compression, trace_id: str,
              partition_key: str) -> WrittenObject:
        path = s3_path(uri)
        schema = result_arrow_schema(raw_schema, contract)
        rows, extent = 0, None
        sink = HashingSink(self._fs.open_output_stream(path))
        try:
            with pq.ParquetWriter(sink, schema, **writer_options(compression)) as writer:
                for raw in batches:
                    batch = result_batch(raw, contract, trace_id=trace_id,
                                         partition_key=partition_key)
                    writer.write_batch(batch.cast(schema), row_group_size=self._row_group_rows)
                    rows += batch.num_rows
                    extent = _extent(raw, extent)
                    self._heap.check("writing Parquet")
                bbox = None if extent is None else BBox(
                    min_lon=extent[0], min_lat=extent[1], max_lon=extent[2], max_lat=extent[3])
                writer.add_key_value_metadata(file_metadata(
                    contract, trace_id=trace_id, partition_key=partition_key, row_count=rows,
                    bbox=bbox))
        finally:
            sink.close()
        footer = pq.read_metadata(self._fs.open_input_file(path))
        deviations = validate_metadata(footer, contract, trace_id=trace_id,
                                       partition_key=partition_key, compression=compression)
        return WrittenObject(uri, rows, sink.size, sink.hexdigest, deviations)
