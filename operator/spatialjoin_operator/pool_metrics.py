"""Prometheus metrics of the WorkerPool reconciliation, in the operator's default registry.

kopf_setup serves the default registry on the operator's metrics port.
Per-pool series carry ``namespace`` and ``pool`` and are removed with the pool.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from spatialjoin_contracts.models.common import Severity

POOL: Final = ("namespace", "pool")
ESCALATIONS: Final = Counter("spatialjoin_operator_escalations_total",
                             "Escalation actions (and step downs) by severity and action",
                             ["severity", "action"])
LAG: Final = Gauge("spatialjoin_operator_pool_consumer_lag", "Consumer lag per task partition",
                   [*POOL, "partition"])
LAG_TOTAL: Final = Gauge("spatialjoin_operator_pool_consumer_lag_total",
                         "Consumer lag of the pool", POOL)
LATENCY: Final = Gauge("spatialjoin_operator_pool_task_latency_seconds",
                       "Task duration percentiles in the sliding window", [*POOL, "quantile"])
OLDEST_RUNNING: Final = Gauge("spatialjoin_operator_pool_oldest_running_task_seconds",
                              "Age of the oldest task still processing", POOL)
FAILURES: Final = Gauge("spatialjoin_operator_pool_window_failures",
                        "Failed tasks in the sliding window by kind", [*POOL, "kind"])
REPLICAS: Final = Gauge("spatialjoin_operator_pool_replicas",
                        "Worker replicas (desired, existing, ready)", [*POOL, "state"])
CONCURRENCY: Final = Gauge("spatialjoin_operator_pool_effective_concurrency",
                           "Concurrency in force", POOL)
SEVERITY: Final = Gauge("spatialjoin_operator_pool_severity",
                        "Open severity: 0 none, 1 P3, 2 P2, 3 P1", POOL)
METRICS_UNAVAILABLE: Final = Gauge("spatialjoin_operator_pool_metrics_unavailable",
                                   "1 while a lag, latency or health read fails", POOL)
OBSERVE_SECONDS: Final = Histogram("spatialjoin_operator_pool_reconcile_seconds",
                                   "Time of one observe-decide-act round", POOL)

SEVERITY_LEVEL: Final = {None: 0, Severity.P3: 1, Severity.P2: 2, Severity.P1: 3}

_lock = threading.Lock()
_partitions: dict[tuple[str, str], set[str]] = {}


def set_lag(namespace: str, pool: str, total: int, partitions: dict[str, int]) -> None:
    LAG_TOTAL.labels(namespace, pool).set(total)
    with _lock:
        known = _partitions.setdefault((namespace, pool), set())
        for gone in known - set(partitions):
            LAG.remove(namespace, pool, gone)
        known.clear()
        known.update(partitions)
    for name, lag in partitions.items():
        LAG.labels(namespace, pool, name).set(lag)


def forget(namespace: str, pool: str) -> None:
    """Drop every series of a deleted pool."""
    with _lock:
        partitions = _partitions.pop((namespace, pool), set())
    for name in partitions:
        LAG.remove(namespace, pool, name)
    for gauge, extra in ((LATENCY, ("0.5", "0.95")), (FAILURES, ("all", "materialization",
                                                                  "schema-drift")),
                         (REPLICAS, ("desired", "existing", "ready"))):
        for value in extra:
            _remove(gauge, namespace, pool, value)
    for single in (LAG_TOTAL, OLDEST_RUNNING, CONCURRENCY, SEVERITY, METRICS_UNAVAILABLE):
        _remove(single, namespace, pool)


def _remove(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)
