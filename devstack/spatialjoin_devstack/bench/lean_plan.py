"""The lean in-process plan: the yardstick of the vectorized engine (issue 9).

Stock libraries, no worker, no Kafka, no S3: read both tables once, then per
partition (``threads`` at a time)

- take that partition's polygons and prepare them (``shapely.prepare``),
  select the points inside the polygons' extent with a numpy mask on x/y;
- build an STRtree over those points and query it with the polygons without
  a predicate (bounding-box candidate pairs);
- test each pair with ``shapely.intersects_xy`` on the prepared polygon and
  the raw coordinates (no Point objects for the test);
- build point WKB directly with a numpy structured dtype (a point's
  intersection is itself);
- lexsort by (domain_id, feature_id) and write zstd Parquet with pyarrow.

Written on its own, not with the engine's modules, so that it measures the
plan and not our implementation of it. Run in a subprocess so that its peak
RSS and CPU time are its own:

    python -m spatialjoin_devstack.bench.lean_plan URL OUT_DIR [THREADS]

prints one JSON object (seconds, cpu_seconds, peak_rss_mb, rows, bytes, ...).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from .cpu import CpuWindow

POINT_WKB = np.dtype([("order", "u1"), ("type", "<u4"), ("x", "<f8"), ("y", "<f8")])

POINTS_SQL = ("SELECT string_agg(int8send(id), ''::bytea), "
              "string_agg(float8send(ST_X(geom)), ''::bytea), "
              "string_agg(float8send(ST_Y(geom)), ''::bytea) FROM domain_b_points")
POLYGONS_SQL = "SELECT id, spatial_partition, ST_AsBinary(geom) FROM domain_a_polygons"


def _read_points(url: str) -> tuple[np.ndarray[Any, Any], ...]:
    with psycopg.connect(url) as conn, conn.cursor(binary=True) as cur:
        cur.execute("SET jit = off")
        cur.execute(POINTS_SQL)
        row = cur.fetchone()
    assert row is not None
    return tuple(np.frombuffer(v, dtype=t).astype(t[1:])
                 for v, t in zip(row, (">i8", ">f8", ">f8"), strict=True))


def _read_polygons(url: str) -> list[tuple[int, str, bytes]]:
    with psycopg.connect(url) as conn, conn.cursor(binary=True) as cur:
        cur.execute(POLYGONS_SQL)
        return [(int(r[0]), str(r[1]), bytes(r[2])) for r in cur.fetchall()]


def _point_wkb(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> pa.Array:
    records = np.empty(x.shape[0], dtype=POINT_WKB)
    records["order"], records["type"], records["x"], records["y"] = 1, 1, x, y
    offsets = np.arange(0, (x.shape[0] + 1) * 21, 21, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), x.shape[0],
                                 [None, pa.py_buffer(offsets), pa.py_buffer(records)])


def _partition(name: str, ids: np.ndarray[Any, Any], polygons: np.ndarray[Any, Any],
               points: tuple[np.ndarray[Any, Any], ...], out: Path) -> tuple[int, int]:
    point_ids, x, y = points
    shapely.prepare(polygons)
    xmin, ymin, xmax, ymax = shapely.total_bounds(polygons)
    inside = (x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)
    pid, px, py = point_ids[inside], x[inside], y[inside]
    tree = shapely.STRtree(shapely.points(px, py))
    poly_at, point_at = tree.query(polygons)
    hit = shapely.intersects_xy(polygons[poly_at], px[point_at], py[point_at])
    poly_at, point_at = poly_at[hit], point_at[hit]
    domain, feature = ids[poly_at], pid[point_at]
    order = np.lexsort((feature, domain))
    point_at = point_at[order]
    table = pa.table({"domain_id": domain[order], "feature_id": feature[order],
                      "geometry": _point_wkb(px[point_at], py[point_at])})
    path = out / f"{name}.parquet"
    pq.write_table(table, path, compression="zstd")
    return table.num_rows, path.stat().st_size


def run(url: str, out: Path, threads: int = 2) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as readers:
        points_future = readers.submit(_read_points, url)
        rows = readers.submit(_read_polygons, url).result()
        points = points_future.result()
    read_s = time.perf_counter() - started
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    parts = np.array([r[1] for r in rows])
    geoms = shapely.from_wkb([r[2] for r in rows])
    names = sorted(set(parts.tolist()))
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(_partition, name, ids[parts == name], geoms[parts == name],
                               points, out) for name in names]
        written = [f.result() for f in futures]
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": seconds, "read_seconds": read_s, "threads": threads,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024, "partitions": len(names),
            "rows": sum(w[0] for w in written), "bytes": sum(w[1] for w in written)}


def measure(url: str, threads: int = 2) -> dict[str, Any]:
    """Run the plan in a fresh interpreter; its figures plus the database's CPU meanwhile."""
    with tempfile.TemporaryDirectory() as out:
        window = CpuWindow(url)
        window.start()
        done = subprocess.run([sys.executable, "-m", __name__, url, out, str(threads)],
                              check=True, capture_output=True, text=True)
        window.stop()
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["database_cpu_seconds"] = window.database_s
    figures["machine_cpu_seconds"] = window.machine_s
    return figures


if __name__ == "__main__":
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    print(json.dumps(run(sys.argv[1], Path(sys.argv[2]), threads)))
