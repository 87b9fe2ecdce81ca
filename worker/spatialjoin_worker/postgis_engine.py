"""The postgis engine: the partition's join streamed from a server-side cursor as Arrow batches."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from psycopg import Connection, ServerCursor
from psycopg_pool import ConnectionPool

from spatialjoin_contracts.task_message import TaskMessage

from .groups import arrow_type, polygons_per_batch, raw_schema, unpack
from .memory import HeapGuard
from .query import COLUMNS, JoinQuery, build_invalid_count, build_join
from .settings import InvalidGeometryPolicy


@dataclass(frozen=True)
class InvalidGeometries:
    count: int
    sample_ids: list[int]


@dataclass
class JoinStream:
    """The schema is known before the first row, so an empty partition still has one."""

    schema: pa.Schema
    invalid: InvalidGeometries
    batches: Iterator[pa.RecordBatch]


class PostgisEngine:
    """Runs the seed's query in a read-only transaction with a statement timeout."""

    def __init__(self, pool: ConnectionPool, *, batch_rows: int, statement_timeout_s: float,
                 policy: InvalidGeometryPolicy, heap: HeapGuard) -> None:
        self._pool = pool
        # Whole polygons, about batch_rows matches at a time (groups.MATCHES_PER_POLYGON).
        self._batch_groups = polygons_per_batch(batch_rows)
        self._timeout_ms = int(statement_timeout_s * 1000)
        self._policy = policy
        self._heap = heap

    @property
    def policy(self) -> InvalidGeometryPolicy:
        return self._policy

    @contextmanager
    def join(self, task: TaskMessage) -> Iterator[JoinStream]:
        """The partition's rows; the read-only transaction lives as long as the block."""
        query = build_join(task.source, task.partition_key, task.bbox, self._policy)
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("SELECT set_config('statement_timeout', %s, true)",
                         (str(self._timeout_ms),))
            # JIT compiles each partition's query anew (~100 ms of CPU measured per
            # query), far more than it saves on partition-sized joins.
            conn.execute("SET LOCAL jit = off")
            invalid = self._invalid(conn, build_invalid_count(task.source, task.partition_key,
                                                              task.bbox))
            with conn.cursor(name=f"join_{task.partition_key}", binary=True) as cursor:
                cursor.itersize = self._batch_groups
                cursor.execute(query.statement, query.params)
                assert cursor.description is not None
                types = {name: col.type_code
                         for name, col in zip(COLUMNS, cursor.description, strict=True)}
                schema = raw_schema(arrow_type(types["domain_id"]),
                                    arrow_type(types["feature_id_type"]))
                yield JoinStream(schema, invalid, self._batches(cursor, schema))

    def _invalid(self, conn: Connection[Any], query: JoinQuery) -> InvalidGeometries:
        row = conn.execute(query.statement, query.params).fetchone()
        if row is None:
            return InvalidGeometries(0, [])
        return InvalidGeometries(int(row[0]), [int(i) for i in (row[1] or [])])

    def _batches(self, cursor: ServerCursor[Any], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        while True:
            rows = cursor.fetchmany(self._batch_groups)
            if not rows:
                return
            yield unpack(rows, schema)
            del rows
            self._heap.check("streaming join rows")
