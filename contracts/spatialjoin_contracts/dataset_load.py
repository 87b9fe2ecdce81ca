"""Load a generated dataset into PostGIS: binary COPY, then indexes, then ANALYZE.

The COPY stream is PostgreSQL's binary format built with numpy: geometry's
binary input takes EWKB, so a point row is a fixed 43-byte record and ten
million of them encode in well under a second.  Tables are created, filled
and indexed in one transaction: readers see the old dataset or the new one.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import psycopg

from .dataset import (
    SCALES,
    SRID,
    Points,
    Polygons,
    generate_points,
    generate_polygons,
    make_cities,
    region_of,
)
from .models import PartitionMapEntry

POLYGONS_TABLE: Final = "domain_a_polygons"
POINTS_TABLE: Final = "domain_b_points"
PARTITIONS_TABLE: Final = "spatial_partitions"

_COPY_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER: Final = struct.pack(">h", -1)

_POINT_ROW: Final = np.dtype(
    [
        ("fields", ">i2"),
        ("id_len", ">i4"),
        ("id", ">i8"),
        ("geom_len", ">i4"),
        ("byte_order", "u1"),
        ("wkb_type", "<u4"),
        ("srid", "<u4"),
        ("x", "<f8"),
        ("y", "<f8"),
    ]
)
_EWKB_POINT_WITH_SRID: Final = 0x20000001

CREATE_TABLES: Final = (
    "CREATE EXTENSION IF NOT EXISTS postgis",
    f"DROP TABLE IF EXISTS {POINTS_TABLE}, {POLYGONS_TABLE}, {PARTITIONS_TABLE}",
    f"""CREATE TABLE {PARTITIONS_TABLE} (
        name            text PRIMARY KEY,
        kafka_partition integer NOT NULL UNIQUE,
        bbox            geometry(Polygon, 4326) NOT NULL)""",
    f"""CREATE TABLE {POLYGONS_TABLE} (
        id                bigint NOT NULL,
        spatial_partition text NOT NULL,
        geom              geometry(Polygon, 4326) NOT NULL)""",
    f"""CREATE TABLE {POINTS_TABLE} (
        id   bigint NOT NULL,
        geom geometry(Point, 4326) NOT NULL)""",
)

CREATE_INDEXES: Final = (
    f"ALTER TABLE {POLYGONS_TABLE} ADD PRIMARY KEY (id)",
    f"ALTER TABLE {POINTS_TABLE} ADD PRIMARY KEY (id)",
    f"CREATE INDEX {POLYGONS_TABLE}_geom_gist ON {POLYGONS_TABLE} USING gist (geom)",
    f"CREATE INDEX {POLYGONS_TABLE}_partition_idx ON {POLYGONS_TABLE} (spatial_partition)",
    f"CREATE INDEX {POINTS_TABLE}_geom_gist ON {POINTS_TABLE} USING gist (geom)",
    f"CREATE INDEX {PARTITIONS_TABLE}_bbox_gist ON {PARTITIONS_TABLE} USING gist (bbox)",
)


def encode_points(points: Points) -> bytes:
    """Binary COPY rows (id, geom) for a chunk of points, without header or trailer."""
    rows = np.empty(points.ids.size, dtype=_POINT_ROW)
    rows["fields"] = 2
    rows["id_len"] = 8
    rows["id"] = points.ids
    rows["geom_len"] = 25
    rows["byte_order"] = 1
    rows["wkb_type"] = _EWKB_POINT_WITH_SRID
    rows["srid"] = SRID
    rows["x"] = points.lon
    rows["y"] = points.lat
    return rows.tobytes()


def encode_polygons(polygons: Polygons, names: Sequence[str]) -> bytes:
    """Binary COPY rows (id, spatial_partition, geom)."""
    encoded = [name.encode() for name in names]
    parts = []
    for pid, index, ewkb in zip(
        polygons.ids.tolist(), polygons.partition_index.tolist(), polygons.ewkb, strict=True
    ):
        name = encoded[index]
        parts.append(struct.pack(">hiqi", 3, 8, pid, len(name)) + name)
        parts.append(struct.pack(">i", len(ewkb)) + ewkb)
    return b"".join(parts)


def _partitions_copy(entries: Sequence[PartitionMapEntry]) -> bytes:
    parts = []
    for entry in entries:
        x0, y0, x1, y1 = entry.bbox.as_tuple()
        ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
        ewkb = struct.pack("<BIII", 1, 0x20000003, SRID, 1) + struct.pack("<I", len(ring))
        ewkb += b"".join(struct.pack("<dd", x, y) for x, y in ring)
        name = entry.name.encode()
        parts.append(struct.pack(">hi", 3, len(name)) + name)
        parts.append(struct.pack(">ii", 4, entry.kafka_partition))
        parts.append(struct.pack(">i", len(ewkb)) + ewkb)
    return b"".join(parts)


@dataclass
class LoadReport:
    """What was loaded and how long each step took."""

    scale: str
    seed: int
    polygons: int = 0
    points: int = 0
    polygons_per_partition: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


Progress = Callable[[str, int], None]


def load_dataset(
    conn: psycopg.Connection[Any],
    entries: Sequence[PartitionMapEntry],
    *,
    scale: str,
    seed: int,
    invalid_fraction: float = 0.0,
    progress: Progress | None = None,
) -> LoadReport:
    """Replace the dataset tables with freshly generated rows; ``progress(step, rows)``."""
    sizes = SCALES[scale]
    report = LoadReport(scale=scale, seed=seed)
    tick = progress or (lambda step, rows: None)
    rng = np.random.default_rng(seed)
    cities = make_cities(rng, region_of(entries))
    names = [entry.name for entry in entries]
    started = time.monotonic()

    def lap(step: str) -> None:
        nonlocal started
        now = time.monotonic()
        report.seconds[step] = round(now - started, 3)
        started = now

    with conn.transaction(), conn.cursor() as cur:
        for statement in CREATE_TABLES:
            cur.execute(statement)
        with cur.copy(f"COPY {PARTITIONS_TABLE} FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(_COPY_HEADER + _partitions_copy(entries) + _COPY_TRAILER)
        polygons = generate_polygons(rng, sizes.polygons, entries, cities, invalid_fraction)
        with cur.copy(f"COPY {POLYGONS_TABLE} FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(_COPY_HEADER + encode_polygons(polygons, names) + _COPY_TRAILER)
        report.polygons = int(polygons.ids.size)
        counts = np.bincount(polygons.partition_index, minlength=len(names))
        report.polygons_per_partition = dict(zip(names, counts.tolist(), strict=True))
        tick("polygons", report.polygons)
        lap("polygons")
        with cur.copy(f"COPY {POINTS_TABLE} FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(_COPY_HEADER)
            for chunk in generate_points(rng, sizes.points, entries, cities):
                copy.write(encode_points(chunk))
                report.points += int(chunk.ids.size)
                tick("points", int(chunk.ids.size))
            copy.write(_COPY_TRAILER)
        lap("points")
        cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
        for statement in CREATE_INDEXES:
            cur.execute(statement)
        tick("indexes", 0)
        lap("indexes")
    conn.execute(f"ANALYZE {PARTITIONS_TABLE}, {POLYGONS_TABLE}, {POINTS_TABLE}")
    conn.commit()
    tick("analyze", 0)
    lap("analyze")
    return report
