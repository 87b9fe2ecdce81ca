"""Prometheus metrics of SpatialJoinJobs, in the default registry the operator serves.

Names carry ``job`` so that the WorkerPool side can define its own reconcile
metrics without a clash in the shared registry.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from spatialjoin_contracts.models.job import JobPhase

DURATION_BUCKETS = (5.0, 10.0, 30.0, 60.0, 90.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0)


class JobMetrics:
    """Jobs by phase, job durations, SLA breaches and reconcile errors."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.jobs = Gauge("spatialjoin_operator_jobs", "SpatialJoinJobs by phase.", ["phase"],
                          registry=registry)
        self.duration = Histogram(
            "spatialjoin_operator_job_duration_seconds",
            "From the first queued partition to Succeeded or Failed.", ["outcome"],
            buckets=DURATION_BUCKETS, registry=registry)
        self.sla_breaches = Counter("spatialjoin_operator_job_sla_breaches",
                                    "Jobs whose sla.deadlineSeconds passed unfinished.",
                                    registry=registry)
        self.reconcile_errors = Counter(
            "spatialjoin_operator_job_reconcile_errors",
            "Failed or blocked SpatialJoinJob reconciliations.", ["handler", "reason"],
            registry=registry)
        self._phases: dict[str, str] = {}
        self._lock = threading.Lock()
        self._publish()

    def job_phase(self, uid: str, phase: JobPhase) -> None:
        with self._lock:
            self._phases[uid] = phase.value
            self._publish()

    def forget(self, uid: str) -> None:
        with self._lock:
            self._phases.pop(uid, None)
            self._publish()

    def finished(self, phase: JobPhase, duration_s: float | None) -> None:
        if duration_s is not None:
            self.duration.labels(outcome=phase.value).observe(duration_s)

    def _publish(self) -> None:
        counts = Tally(self._phases.values())
        for phase in JobPhase:
            self.jobs.labels(phase=phase.value).set(counts.get(phase.value, 0))


JOB_METRICS = JobMetrics()
