"""Assemble a worker from its settings and run it until SIGTERM."""

from __future__ import annotations

import signal
import threading
from typing import Any
from urllib.parse import urlparse

from psycopg_pool import ConnectionPool
from pyarrow import fs

from .backoff import RetryPolicy
from .consumer import WorkerLoop
from .dead_letter import DeadLetters
from .engine import build_engine
from .logs import configure, get_logger
from .materialize import Materializer
from .memory import HeapGuard, tune_allocators
from .metrics import WorkerMetrics
from .records import TaskRecords
from .settings import WorkerSettings
from .task import TaskProcessor


def s3_filesystem(settings: WorkerSettings) -> fs.S3FileSystem:
    """pyarrow's S3 client for the configured (possibly S3-compatible) endpoint."""
    options: dict[str, Any] = {"region": settings.s3_region, "connect_timeout": 5,
                               "request_timeout": 60}
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        options["access_key"] = settings.aws_access_key_id.get_secret_value()
        options["secret_key"] = settings.aws_secret_access_key.get_secret_value()
    if settings.s3_endpoint:
        endpoint = urlparse(settings.s3_endpoint)
        options["endpoint_override"] = endpoint.netloc
        options["scheme"] = endpoint.scheme or "https"
        options["force_virtual_addressing"] = False
    return fs.S3FileSystem(**options)


def kafka_config(settings: WorkerSettings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka_bootstrap,
            "client.id": f"spatialjoin-worker-{settings.worker_id}"}


def consumer_config(settings: WorkerSettings) -> dict[str, Any]:
    return {**kafka_config(settings), "group.id": settings.consumer_group,
            "auto.offset.reset": "earliest",
            # A task is seconds of work; waiting up to the default 500 ms for a
            # fuller fetch only delayed each pickup (0.56 s measured).
            "fetch.wait.max.ms": 50,
            "max.poll.interval.ms": int(max(300.0, settings.statement_timeout_s * 2) * 1000),
            "session.timeout.ms": 10_000, "heartbeat.interval.ms": 1_000,
            "partition.assignment.strategy": "range,roundrobin"}


def build(settings: WorkerSettings, stop: threading.Event,
          metrics: WorkerMetrics | None = None) -> tuple[WorkerLoop, ConnectionPool]:
    """Everything a worker needs, wired; the caller runs the loop and closes the pool."""
    metrics = metrics or WorkerMetrics()
    heap = HeapGuard.from_mb(settings.max_heap_mb)
    db = ConnectionPool(settings.database_url.get_secret_value(), min_size=1,
                        max_size=settings.concurrency + 2, open=True,
                        kwargs={"application_name": f"spatialjoin-worker-{settings.worker_id}"})
    s3 = s3_filesystem(settings)
    engine = build_engine(settings, db, heap, metrics, s3)
    processor = TaskProcessor(
        records=TaskRecords(db), engine=engine,
        materializer=Materializer(s3, row_group_rows=settings.row_group_rows, heap=heap),
        metrics=metrics,
        retry=RetryPolicy(settings.max_retries, settings.retry_initial_delay_s,
                          settings.retry_max_delay_s),
        worker_id=settings.worker_id, active_contract=settings.active_contract, stop=stop)
    loop = WorkerLoop(consumer_config(settings), settings.topic, processor,
                      DeadLetters(kafka_config(settings), settings.dead_letter_topic), metrics,
                      concurrency=settings.concurrency,
                      commit_interval_s=settings.commit_interval_s, stop=stop)
    return loop, db


def run(settings: WorkerSettings) -> None:
    """The `spatialjoin worker` process: metrics, signals, the loop."""
    configure(settings.log_level)
    tune_allocators()
    log = get_logger("spatialjoin.worker")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal received, stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    metrics = WorkerMetrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port, settings.metrics_addr)
    loop, db = build(settings, stop, metrics)
    try:
        loop.run()
    finally:
        db.close()
