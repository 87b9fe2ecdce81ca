"""Small pure rules the pool policy is built from: the heap estimate, hysteresis, history.

The per-task memory estimate: a worker needs BASE_HEAP_MB for itself (the
interpreter, pyarrow, the Kafka client, its connection pool) plus
PER_TASK_HEAP_MB for each task it runs at once (one server-side cursor batch
of 50,000 rows as Arrow, one Parquet row group being encoded, zstd buffers):
``maxHeapMb >= BASE_HEAP_MB + concurrency x PER_TASK_HEAP_MB``.

What the pool did is read back from ``status.escalations`` (oldest first):
the last action per knob starts that knob's cooldown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from spatialjoin_contracts.models import WorkerPoolSpec
from spatialjoin_contracts.models.common import Severity
from spatialjoin_contracts.models.pool import EscalationAction

from .conditions import parse_time

BASE_HEAP_MB: Final = 512
PER_TASK_HEAP_MB: Final = 256
CLEAR_RATIO: Final = 0.8
PAUSE_ANNOTATION: Final = "spatialjoin.io/paused"
CLEAR_P1_ANNOTATION: Final = "spatialjoin.io/clear-p1"

ESCALATION_PATH: Final = {Severity.P3: "Platform Engineering", Severity.P2: "Data Architecture",
                          Severity.P1: "GIS Data Stewards"}


class Knob(StrEnum):
    CONCURRENCY = "concurrency"
    REPLICAS = "replicas"
    CONTRACT = "contract"


_KNOB_SEVERITY: Final = {Knob.CONCURRENCY: Severity.P3, Knob.REPLICAS: Severity.P2,
                         Knob.CONTRACT: Severity.P1}
_KNOB_ACTION: Final = {Knob.CONCURRENCY: EscalationAction.SCALE_CONCURRENCY,
                       Knob.REPLICAS: EscalationAction.REBALANCE,
                       Knob.CONTRACT: EscalationAction.ROLLBACK_CONTRACT}


@dataclass(frozen=True)
class HeapCheck:
    """Whether maxHeapMb carries escalation.p3.concurrency by the per-task estimate."""

    max_heap_mb: int
    wanted: int
    required_mb: int
    max_concurrency: int

    @property
    def fits(self) -> bool:
        return self.required_mb <= self.max_heap_mb


def heap_required_mb(concurrency: int) -> int:
    return BASE_HEAP_MB + concurrency * PER_TASK_HEAP_MB


def heap_check(spec: WorkerPoolSpec) -> HeapCheck:
    wanted = spec.escalation.p3.concurrency
    return HeapCheck(max_heap_mb=spec.max_heap_mb, wanted=wanted,
                     required_mb=heap_required_mb(wanted),
                     max_concurrency=max(0, (spec.max_heap_mb - BASE_HEAP_MB) // PER_TASK_HEAP_MB))


def heap_message(spec: WorkerPoolSpec, heap: HeapCheck) -> str:
    text = (f"maxHeapMb {heap.max_heap_mb} carries {heap.max_concurrency} tasks at once "
            f"({BASE_HEAP_MB} MiB + {PER_TASK_HEAP_MB} MiB per task); "
            f"escalation.p3.concurrency {heap.wanted} needs {heap.required_mb} MiB")
    if heap.fits:
        return text
    if spec.concurrency > heap.max_concurrency:
        return (f"{text}; spec.concurrency {spec.concurrency} already needs "
                f"{heap_required_mb(spec.concurrency)} MiB: P3 will not raise it")
    return f"{text}: P3 stops at {heap.max_concurrency} instead of risking OOM"


def step_down(current: int, floor: int) -> int:
    """Half the remaining way down (at least one), never below the floor."""
    if current <= floor:
        return floor
    return current - max(1, math.ceil((current - floor) / 2))


def is_paused(annotations: Mapping[str, str]) -> bool:
    return annotations.get(PAUSE_ANNOTATION, "").strip().lower() in ("true", "1", "yes")


def band(value: float | None, threshold: float) -> bool | None:
    """True above the threshold, False at or below CLEAR_RATIO of it, None between or unknown."""
    if value is None:
        return None
    if value > threshold:
        return True
    if value <= threshold * CLEAR_RATIO:
        return False
    return None


def _knob_entries(escalations: Sequence[Mapping[str, Any]], knob: Knob
                  ) -> list[Mapping[str, Any]]:
    severity = _KNOB_SEVERITY[knob].value
    return [e for e in escalations
            if e.get("action") == _KNOB_ACTION[knob].value
            or (e.get("action") == EscalationAction.STEP_DOWN.value
                and e.get("severity") == severity)]


def last_action_time(escalations: Sequence[Mapping[str, Any]], knob: Knob) -> datetime | None:
    times = [parse_time(e.get("time")) for e in _knob_entries(escalations, knob)]
    known = [t for t in times if t is not None]
    return max(known) if known else None


def last_step_down_time(escalations: Sequence[Mapping[str, Any]], severity: Severity
                        ) -> datetime | None:
    times = [parse_time(e.get("time")) for e in escalations
             if e.get("severity") == severity.value
             and e.get("action") == EscalationAction.STEP_DOWN.value]
    known = [t for t in times if t is not None]
    return max(known) if known else None


def open_incident(escalations: Sequence[Mapping[str, Any]], severity: Severity
                  ) -> Mapping[str, Any] | None:
    """The latest escalation (not a step down) of ``severity``."""
    found = [e for e in escalations if e.get("severity") == severity.value
             and e.get("action") != EscalationAction.STEP_DOWN.value]
    return found[-1] if found else None
