"""Baselines the worker is measured against: DuckDB's spatial join and bare PostGIS queries."""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg
import pyarrow as pa

from spatialjoin_contracts.task_message import TaskMessage
from spatialjoin_worker.query import build_join
from spatialjoin_worker.settings import InvalidGeometryPolicy


def _duckdb() -> Any:
    """DuckDB with the spatial extension loaded offline from the wheel that ships it."""
    import duckdb
    import duckdb_extension_spatial

    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False, "threads": 2})
    folder = os.path.join(os.path.dirname(duckdb_extension_spatial.__file__), "extensions")
    (version,) = os.listdir(folder)
    con.execute(f"INSTALL '{os.path.join(folder, version, 'spatial.duckdb_extension')}'")
    con.execute("LOAD spatial")
    return con


def _fetch_arrow(database_url: str, query: str) -> pa.Table:
    with psycopg.connect(database_url) as conn, conn.cursor(binary=True) as cur:
        cur.execute(query)
        assert cur.description is not None
        names = [c.name for c in cur.description]
        columns = list(zip(*cur.fetchall(), strict=True))
    return pa.table({name: list(values) for name, values in zip(names, columns, strict=True)})


def duckdb_join(database_url: str, rounds: int) -> dict[str, Any]:
    """The same rows joined in DuckDB (2 threads) with the same ST_Intersection output.

    Loading into DuckDB is not timed; the median of ``rounds`` joins is.
    """
    polygons = _fetch_arrow(database_url, "SELECT id, spatial_partition, ST_AsBinary(geom) "
                                          "AS wkb FROM domain_a_polygons")
    points = _fetch_arrow(database_url, "SELECT id, ST_AsBinary(geom) AS wkb "
                                        "FROM domain_b_points")
    con = _duckdb()
    con.register("polygons_arrow", polygons)
    con.register("points_arrow", points)
    con.execute("CREATE TABLE a AS SELECT id, spatial_partition, ST_GeomFromWKB(wkb) AS geom "
                "FROM polygons_arrow")
    con.execute("CREATE TABLE b AS SELECT id, ST_GeomFromWKB(wkb) AS geom FROM points_arrow")
    timings, rows = [], 0
    for _ in range(rounds):
        con.execute("DROP TABLE IF EXISTS r")
        started = time.perf_counter()
        con.execute("CREATE TABLE r AS SELECT a.id AS domain_id, b.id AS feature_id, "
                    "ST_AsWKB(ST_Intersection(a.geom, b.geom)) AS geometry "
                    "FROM a JOIN b ON ST_Intersects(a.geom, b.geom)")
        timings.append(time.perf_counter() - started)
        rows = int(con.execute("SELECT count(*) FROM r").fetchone()[0])
    con.close()
    return {"seconds": sorted(timings)[len(timings) // 2], "rounds": timings, "rows": rows}


def bare_partition_queries(database_url: str, tasks: list[TaskMessage],
                           batch_rows: int = 50_000) -> dict[str, float]:
    """Each partition's worker query streamed from a server-side cursor to nowhere."""
    seconds = {}
    with psycopg.connect(database_url) as conn:
        for task in tasks:
            query = build_join(task.source, task.partition_key, task.bbox,
                               InvalidGeometryPolicy.MAKE_VALID)
            started = time.perf_counter()
            with conn.transaction(), conn.cursor(name="bare", binary=True) as cur:
                conn.execute("SET LOCAL jit = off")  # as the worker runs it
                cur.execute(query.statement, query.params)
                while cur.fetchmany(batch_rows):
                    pass
            seconds[task.partition_key] = time.perf_counter() - started
    return seconds
