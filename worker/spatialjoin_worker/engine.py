"""What the task needs from a join engine, and how the pool's ``engine`` picks one."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from psycopg_pool import ConnectionPool
from pyarrow import fs

from spatialjoin_contracts.models.pool import Engine
from spatialjoin_contracts.task_message import TaskMessage

from .memory import HeapGuard
from .metrics import WorkerMetrics
from .postgis_engine import JoinStream, PostgisEngine
from .settings import InvalidGeometryPolicy, WorkerSettings
from .vectorized_engine import VectorizedEngine, VectorizedMetrics, cpu_slots


class JoinEngine(Protocol):
    """A partition's rows in (domain_id, feature_id) order, in the raw schema (groups.py)."""

    @property
    def policy(self) -> InvalidGeometryPolicy:
        """The invalid-geometry policy the engine applies (labels the invalid-geometry metric)."""
        ...

    def join(self, task: TaskMessage) -> AbstractContextManager[JoinStream]:
        """The stream of the task's rows; resources live as long as the block."""
        ...


def build_engine(settings: WorkerSettings, db: ConnectionPool, heap: HeapGuard,
                 metrics: WorkerMetrics, filesystem: fs.FileSystem | None = None) -> JoinEngine:
    """The engine the WorkerPool asked for (SPATIALJOIN_ENGINE); postgis by default.

    ``filesystem`` (app.s3_filesystem) is where the vectorized engine reads GeoParquet
    sources; the postgis engine refuses them (query.GeoParquetNeedsVectorized)."""
    if settings.engine is Engine.VECTORIZED:
        return VectorizedEngine(db, batch_rows=settings.batch_rows,
                                statement_timeout_s=settings.statement_timeout_s,
                                policy=settings.invalid_geometry_policy, heap=heap,
                                slots=min(settings.concurrency, cpu_slots()),
                                tasks=settings.concurrency,
                                metrics=VectorizedMetrics(metrics.registry),
                                filesystem=filesystem)
    return PostgisEngine(db, batch_rows=settings.batch_rows,
                         statement_timeout_s=settings.statement_timeout_s,
                         policy=settings.invalid_geometry_policy, heap=heap)

