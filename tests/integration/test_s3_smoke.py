"""S3 of the local stack: a zstd Parquet file round-trips through pyarrow's S3 client."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs

pytestmark = pytest.mark.integration


def test_zstd_parquet_round_trip(s3_filesystem: Any, s3_prefix: str) -> None:
    table = pa.table({"domain_id": pa.array(range(10_000), pa.int64()),
                      "name": [f"f{i}" for i in range(10_000)]})
    path = f"{s3_prefix}/round-trip.parquet"
    pq.write_table(table, path, filesystem=s3_filesystem, compression="zstd")
    back = pq.read_table(path, filesystem=s3_filesystem)
    metadata = pq.ParquetFile(s3_filesystem.open_input_file(path)).metadata
    assert back.equals(table)
    assert metadata.row_group(0).column(0).compression == "ZSTD"


def test_wrong_credentials_are_refused(stack_settings: dict[str, Any], s3_prefix: str) -> None:
    s3 = stack_settings["s3"]
    intruder = fs.S3FileSystem(access_key=s3["access_key"], secret_key="not-the-secret",
                               endpoint_override=s3["endpoint"], scheme="http",
                               region="us-east-1", retry_strategy=fs.AwsStandardS3RetryStrategy(
                                   max_attempts=1))
    with pytest.raises(OSError):
        pq.write_table(pa.table({"x": [1]}), f"{s3_prefix}/intruder.parquet",
                       filesystem=intruder)
