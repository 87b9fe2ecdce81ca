"""Prometheus metrics of a worker, served on the metrics port (also the probes' target)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 45, 90, 180, 600)


@dataclass
class WorkerMetrics:
    """One registry per worker so tests can run several in one process."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.task_duration = Histogram(
            "spatialjoin_worker_task_duration_seconds", "Task duration, claim to record",
            ["outcome"], buckets=DURATION_BUCKETS, registry=r)
        self.tasks = Counter("spatialjoin_worker_tasks_total", "Tasks by outcome",
                             ["outcome"], registry=r)
        self.rows = Counter("spatialjoin_worker_rows_written_total", "Result rows written",
                            registry=r)
        self.bytes = Counter("spatialjoin_worker_bytes_written_total",
                             "Parquet bytes written", ["compression"], registry=r)
        self.retries = Counter("spatialjoin_worker_retries_total",
                               "Retries of transient failures", ["stage"], registry=r)
        self.dead_lettered = Counter("spatialjoin_worker_dead_lettered_total",
                                     "Tasks sent to the dead-letter topic", ["reason"],
                                     registry=r)
        self.materialization_failures = Counter(
            "spatialjoin_worker_materialization_failures_total",
            "Results that failed to materialize or deviated from their contract", ["kind"],
            registry=r)
        self.invalid_geometries = Counter(
            "spatialjoin_worker_invalid_geometries_total",
            "Invalid source polygons met (made valid or skipped by policy)", ["policy"],
            registry=r)
        self.in_flight = Gauge("spatialjoin_worker_tasks_in_flight", "Tasks running now",
                               registry=r)
        self.peak_memory = Gauge("spatialjoin_worker_peak_resident_bytes",
                                 "High-water mark of the worker's resident memory", registry=r)
        self.concurrency = Gauge("spatialjoin_worker_concurrency",
                                 "Tasks this worker runs at once", registry=r)

    def serve(self, port: int, addr: str) -> None:
        """Expose /metrics (any path answers, so probes can use it too)."""
        start_http_server(port, addr=addr, registry=self.registry)
