"""The vectorized engine: the partition's inputs streamed out of PostGIS, joined in the worker.

Same rows, order, schema, invalid-geometry policy and errors as the postgis
engine (postgis_engine.py); only where the join runs differs. Per task:

1. in one read-only, repeatable-read transaction: read the partition's
   polygons exactly as the postgis engine selects and fixes them (counting the
   invalid ones on the way), and the points inside the polygons' extent
   (vector_source.py); a side whose source names GeoParquet is read from S3
   instead, with the same filters (geoparquet_source.py);
2. join them with shapely and numpy (vector_join.py), tile by tile when the
   points would not fit in the task's share of maxHeapMb (tiling.py);
3. hand the materializer batches cut exactly where the postgis engine cuts
   them, so that the two engines write byte-identical files for point data.

Reads and joins each pass a gate with one slot per CPU: on two cores eight
joins at once would be no faster than two but would hold four times the
memory, and a task can read (PostgreSQL working) while another joins (the
worker working). Step 3 passes no gate: it runs while other tasks join.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

import pyarrow as pa
import structlog
from prometheus_client import CollectorRegistry, Counter
from psycopg import sql
from psycopg_pool import ConnectionPool
from pyarrow import fs

from spatialjoin_contracts.models.job import JoinSource, Predicate
from spatialjoin_contracts.task_message import TaskMessage

from . import geoparquet_source
from .groups import arrow_type, polygons_per_batch, raw_schema
from .memory import HeapGuard
from .point_wkb import IntArray
from .postgis_engine import InvalidGeometries, JoinStream
from .settings import InvalidGeometryPolicy
from .tiling import (
    CHUNK_CANDIDATE_BYTES,
    JOIN_BYTES_PER_POINT,
    READ_BYTES_PER_POINT,
    Box,
    extent,
    plan_read_tiles,
    split_points,
)
from .vector_join import (
    Features,
    Matches,
    Points,
    Polygons,
    join_features,
    join_points,
    merge,
    record_batches,
)
from .vector_source import (
    Connection,
    PointRows,
    PolygonRows,
    estimate_points,
    feature_id_query,
    features_query,
    has_point_typmod,
    known_row_count,
    points_query,
    polygons_query,
    read_features,
    read_points,
    read_polygons,
    type_oid,
)

log = structlog.get_logger("spatialjoin.worker.vectorized")

JOIN_HEAP_SHARE: Final = 0.5
"""Share of maxHeapMb the running joins may plan for."""
READ_HEAP_SHARE: Final = 0.25
"""Share of maxHeapMb the points read by all running tasks may take; the rest is the
process itself, Arrow and S3 buffers, and the results waiting to be written."""
MIN_TILE_POINTS: Final = 4096


class UnsupportedPredicate(ValueError):
    """dwithin measures geography distance on the spheroid, which shapely cannot reproduce."""


class NoFilesystem(ValueError):
    """A GeoParquet source, but the engine was built without an S3 filesystem."""


@dataclass
class VectorizedMetrics:
    """The engine's own counters, registered in the worker's registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.tiles = Counter("spatialjoin_worker_vectorized_tiles_total",
                             "Join tiles run by the vectorized engine", registry=r)
        self.split_tasks = Counter(
            "spatialjoin_worker_vectorized_split_tasks_total",
            "Tasks split into more than one tile to stay within maxHeapMb", registry=r)
        self.points = Counter("spatialjoin_worker_vectorized_points_read_total",
                              "Point features read from the source", registry=r)
        self.candidates = Counter("spatialjoin_worker_vectorized_candidate_pairs_total",
                                  "Bounding-box candidate pairs tested", registry=r)


@dataclass(frozen=True)
class TileLimits:
    """Points one task may read at once, and one compute slot may join at once."""

    read_points: int
    join_points: int

    @classmethod
    def for_heap(cls, cap_bytes: int, slots: int, tasks: int) -> TileLimits:
        """Shares of maxHeapMb: the joins of the slots, and the reads of all running tasks
        (a task holds what it read while it waits for a slot)."""
        join_share = cap_bytes * JOIN_HEAP_SHARE / max(1, slots) - CHUNK_CANDIDATE_BYTES
        read_share = cap_bytes * READ_HEAP_SHARE / max(1, tasks)
        # Below a few thousand points a tile costs more in queries than it saves in
        # memory; a cap that small is the heap guard's business.
        return cls(max(MIN_TILE_POINTS, int(read_share // READ_BYTES_PER_POINT)),
                   max(MIN_TILE_POINTS, int(join_share // JOIN_BYTES_PER_POINT)))


@dataclass
class JoinReport:
    """What one task's join did; logged with the task's traceId and partition."""

    polygons: int = 0
    points: int = 0
    features: int = 0
    candidates: int = 0
    matches: int = 0
    read_tiles: int = 0
    join_tiles: int = 0
    read_s: float = 0.0
    join_s: float = 0.0
    wait_s: float = 0.0


def cpu_slots() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class VectorizedEngine:
    """Joins one partition in the worker with shapely/numpy; satisfies engine.JoinEngine."""

    def __init__(self, pool: ConnectionPool, *, batch_rows: int, statement_timeout_s: float,
                 policy: InvalidGeometryPolicy, heap: HeapGuard, slots: int | None = None,
                 tasks: int = 8, limits: TileLimits | None = None,
                 metrics: VectorizedMetrics | None = None,
                 filesystem: fs.FileSystem | None = None) -> None:
        self._pool = pool
        self._filesystem = filesystem  # for GeoParquet sources (app.s3_filesystem)
        self._groups_per_batch = polygons_per_batch(batch_rows)  # the postgis engine's cut
        self._timeout_ms = int(statement_timeout_s * 1000)
        self._policy = policy
        self._heap = heap
        slots = slots or cpu_slots()
        # Reads wait on PostgreSQL (another process, its own CPU), joins on our threads:
        # separate gates let one task read while another joins.
        self._reads = threading.BoundedSemaphore(slots)
        self._joins = threading.BoundedSemaphore(slots)
        self._limits = limits or TileLimits.for_heap(heap.cap_bytes, slots, tasks)
        self._metrics = metrics or VectorizedMetrics()

    @property
    def policy(self) -> InvalidGeometryPolicy:
        return self._policy

    @contextmanager
    def join(self, task: TaskMessage) -> Iterator[JoinStream]:
        """Read and join the partition, then stream its rows in order."""
        if task.source.predicate.type is not Predicate.INTERSECTS:
            raise UnsupportedPredicate(
                f"the vectorized engine does not run predicate "
                f"{task.source.predicate.type.value}: PostGIS measures its distance on the "
                f"spheroid (geography), which shapely cannot reproduce exactly; run this job "
                f"on a WorkerPool with engine: postgis")
        report = JoinReport()
        with self._pool.connection() as conn, conn.transaction():
            # One snapshot for every read of the task; JIT off as in the postgis engine;
            # parallel workers would only compete with the other tasks for the same cores.
            # work_mem keeps the points' bitmap exact: at 4 MB (the default) the large
            # dataset's bigger partitions got lossy bitmaps or a sequential scan of all
            # 10M points (2.2 s instead of 1.6 s for 2.7M points). Reads pass a gate, so
            # few sessions hold it at once.
            conn.execute(sql.SQL(
                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; "
                "SET LOCAL statement_timeout = {}; SET LOCAL jit = off; "
                "SET LOCAL max_parallel_workers_per_gather = 0; "
                "SET LOCAL work_mem = '64MB'").format(sql.Literal(self._timeout_ms)))
            with self._gate(self._reads, report, "read_s"):
                polygon_rows = self._read_polygons(conn, task)
                feature_oid = (type_oid(conn, feature_id_query(task.source))
                               if task.source.points.geoparquet is None else
                               geoparquet_source.feature_id_type_oid(self._fs(),
                                                                     task.source.points))
            invalid = InvalidGeometries(*polygon_rows.invalid_ids())
            polygons = Polygons.from_wkb(*polygon_rows.joinable())
            del polygon_rows.wkbs[:]
            matches = self._join(conn, task, polygons, report)
            report.matches = len(matches)
        schema = raw_schema(arrow_type(polygon_rows.id_type_oid), arrow_type(feature_oid))
        self._record(report)
        yield JoinStream(schema, invalid, self._batches(matches, polygons, schema))

    def _fs(self) -> fs.FileSystem:
        if self._filesystem is None:
            raise NoFilesystem("the job reads GeoParquet but the vectorized engine has no S3 "
                               "filesystem")
        return self._filesystem

    def _read_polygons(self, conn: Connection, task: TaskMessage) -> PolygonRows:
        if task.source.polygons.geoparquet is not None:
            return geoparquet_source.read_polygons(self._fs(), task.source.polygons,
                                                   task.partition_key, task.bbox, self._policy)
        return read_polygons(conn, polygons_query(task.source, task.partition_key, task.bbox,
                                                  self._policy))

    @contextmanager
    def _gate(self, gate: threading.BoundedSemaphore, report: JoinReport,
              spent: str) -> Iterator[None]:
        """Hold ``gate`` for the block; time the wait and the work into ``report``."""
        asked = time.perf_counter()
        with gate:
            entered = time.perf_counter()
            report.wait_s += entered - asked
            try:
                yield
            finally:
                setattr(report, spent, getattr(report, spent) + time.perf_counter() - entered)

    def _join(self, conn: Connection, task: TaskMessage, polygons: Polygons,
              report: JoinReport) -> Matches:
        report.polygons = len(polygons)
        root = extent(polygons.bounds)
        if root is None:
            return Matches.empty()
        self._heap.check("reading polygons")
        source = task.source
        if source.points.geoparquet is not None:
            return self._join_geoparquet(source, root, polygons, report)
        table = source.points.table
        assert table is not None  # validate_job: exactly one of table and geoparquet
        typed_points = has_point_typmod(conn, table, source.points.geometry_column)

        def reader(box: Box) -> Callable[[], PointRows]:
            return lambda: read_points(conn, points_query(source, box, typed_points=typed_points))

        parts = [self._join_points(reader(box), box, polygons, report)
                 for box in self._read_tiles(conn, task, table, root, report)]
        if not typed_points:
            with self._gate(self._reads, report, "read_s"):
                ids, wkbs = read_features(conn, features_query(source, root))
            parts.append(self._join_features(ids, wkbs, polygons, report))
        return merge(parts)

    def _join_geoparquet(self, source: JoinSource, root: Box, polygons: Polygons,
                         report: JoinReport) -> Matches:
        """Points and other features from GeoParquet, read in one pass over the extent.

        The read is not tiled (a file has no planner estimate to tile by); it holds only
        the rows inside the extent, read batch by batch, and the join is still tiled."""
        report.read_tiles = 1
        with self._gate(self._reads, report, "read_s"):
            rows, (ids, wkbs) = geoparquet_source.read_points(self._fs(), source.points, root)
        held = [rows]  # popped by _join_points, which frees the points once joined
        del rows
        parts = [self._join_points(held.pop, root, polygons, report)]
        if wkbs:
            parts.append(self._join_features(ids, wkbs, polygons, report))
        return merge(parts)

    def _join_features(self, ids: IntArray, wkbs: list[bytes], polygons: Polygons,
                       report: JoinReport) -> Matches:
        report.features += len(wkbs)
        with self._gate(self._joins, report, "join_s"):
            matches = join_features(polygons, Features.from_wkb(ids, wkbs))
        self._heap.check("joining non-point features")
        return matches

    def _read_tiles(self, conn: Connection, task: TaskMessage, table: str, root: Box,
                    report: JoinReport) -> list[Box]:
        limit = self._limits.read_points
        rows = known_row_count(conn, table)
        if rows is not None and rows <= limit:
            tiles = [root]
        else:
            tiles = plan_read_tiles(root, lambda box: estimate_points(conn, task.source, box),
                                    limit)
        report.read_tiles = len(tiles)
        return tiles

    def _join_points(self, read: Callable[[], PointRows], box: Box, polygons: Polygons,
                     report: JoinReport) -> Matches:
        with self._gate(self._reads, report, "read_s"):
            rows = read()
        owned = box.contains(rows.x, rows.y)
        points = Points.of(rows.ids[owned], rows.x[owned], rows.y[owned])
        del rows, owned
        report.points += len(points)
        self._heap.check("reading points")
        groups = split_points(points.x, points.y, self._limits.join_points)
        parts = []
        for index in groups:
            tile = points if len(groups) == 1 else points.take(index)
            with self._gate(self._joins, report, "join_s"):
                matches, candidates = join_points(polygons, tile)
            report.candidates += candidates
            report.join_tiles += 1
            parts.append(matches)
            self._heap.check("joining a tile")
        return merge(parts)

    def _record(self, report: JoinReport) -> None:
        m = self._metrics
        m.tiles.inc(report.join_tiles)
        m.points.inc(report.points)
        m.candidates.inc(report.candidates)
        fields = {"polygons": report.polygons, "points": report.points,
                  "features": report.features, "candidate_pairs": report.candidates,
                  "matches": report.matches, "read_tiles": report.read_tiles,
                  "join_tiles": report.join_tiles, "read_s": round(report.read_s, 3),
                  "join_s": round(report.join_s, 3), "wait_s": round(report.wait_s, 3)}
        split = report.join_tiles > 1 or report.read_tiles > 1
        if split:
            m.split_tasks.inc()
            log.info("partition split into tiles to stay within maxHeapMb",
                     read_points_limit=self._limits.read_points,
                     join_points_limit=self._limits.join_points,
                     read_tiles=report.read_tiles, join_tiles=report.join_tiles)
        log.info("vectorized join done", tiled=split, **fields)

    def _batches(self, matches: Matches, polygons: Polygons,
                 schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        for batch in record_batches(matches, polygons, schema, self._groups_per_batch):
            yield batch
            self._heap.check("streaming join rows")
