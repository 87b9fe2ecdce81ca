"""One task, one step at a time: claim, skip redeliveries, join, write, validate, record."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import structlog

from spatialjoin_contracts.ddl import FailureKind
from spatialjoin_contracts.models import ContractVersion
from spatialjoin_contracts.task_message import TaskMessage

from .backoff import RetryPolicy
from .contract_choice import effective_contract
from .engine import JoinEngine
from .failures import FailureClass, classify
from .materialize import Materializer, WrittenObject
from .memory import HeapCapExceeded, peak_resident_bytes
from .metrics import WorkerMetrics
from .records import ResultRecord, TaskRecords

log = structlog.get_logger("spatialjoin.worker.task")


class Outcome(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"
    """A redelivery: the result was already recorded."""
    CANCELLED = "cancelled"
    FAILED = "failed"
    """Dead-lettered with the error, after retries where they could help."""


@dataclass(frozen=True)
class TaskResult:
    outcome: Outcome
    kind: FailureKind | None = None
    error: str | None = None
    written: WrittenObject | None = None


class TaskStopped(Exception):
    """Shutdown interrupted a backoff: leave the task uncommitted for redelivery."""


@dataclass
class TaskProcessor:
    """The per-task steps; the consumer decides about offsets and dead letters."""

    records: TaskRecords
    engine: JoinEngine
    materializer: Materializer
    metrics: WorkerMetrics
    retry: RetryPolicy
    worker_id: str
    active_contract: ContractVersion | None
    stop: threading.Event
    clock: Callable[[], float] = time.monotonic

    def process(self, task: TaskMessage) -> TaskResult:
        structlog.contextvars.bind_contextvars(traceId=task.trace_id,
                                               partition=task.partition_key,
                                               attempt=task.attempt)
        try:
            return self._process(task)
        finally:
            structlog.contextvars.unbind_contextvars("traceId", "partition", "attempt")

    def _process(self, task: TaskMessage) -> TaskResult:
        if self.records.is_cancelled(task):
            log.info("task skipped: job cancelled")
            return TaskResult(Outcome.CANCELLED)
        existing = self.records.existing_result(task)
        if existing is not None:
            self.records.mark_done_from_existing(task, existing)
            log.info("task skipped: result already recorded", uri=existing.uri)
            return TaskResult(Outcome.SKIPPED)
        self.records.mark_processing(task, self.worker_id)
        contract = effective_contract(task.output.contract, self.active_contract)
        started = self.clock()
        retry = 0
        while True:
            try:
                return self._run_once(task, contract, started)
            except HeapCapExceeded as exc:
                return self._fail(task, FailureKind.HEAP_CAP, str(exc))
            except Exception as exc:
                if classify(exc) is FailureClass.PERMANENT:
                    return self._fail(task, FailureKind.QUERY, f"{type(exc).__name__}: {exc}")
                retry += 1
                if not self.retry.should_retry(retry):
                    return self._fail(task, FailureKind.TRANSIENT_EXHAUSTED,
                                      f"gave up after {retry - 1} retries: "
                                      f"{type(exc).__name__}: {exc}")
                delay = self.retry.delay(retry)
                self.metrics.retries.labels(stage="task").inc()
                log.warning("transient failure, retrying", retry=retry, delay_s=round(delay, 2),
                            error=f"{type(exc).__name__}: {exc}")
                if self.stop.wait(delay):
                    raise TaskStopped("shutdown during backoff") from exc

    def _run_once(self, task: TaskMessage, contract: ContractVersion,
                  started: float) -> TaskResult:
        with self.engine.join(task) as stream:
            if stream.invalid.count:
                self.metrics.invalid_geometries.labels(policy=self.engine.policy.value).inc(
                    stream.invalid.count)
                log.warning("invalid source geometries", count=stream.invalid.count,
                            sample_ids=stream.invalid.sample_ids)
            written = self.materializer.write(
                task.output.uri, stream.schema, stream.batches, contract=contract,
                compression=task.output.compression, trace_id=task.trace_id,
                partition_key=task.partition_key)
            invalid = stream.invalid.count
        if written.deviations:
            listed = "; ".join(str(d) for d in written.deviations)
            self.metrics.materialization_failures.labels(kind="schema-drift").inc()
            return self._fail(task, FailureKind.SCHEMA_DRIFT,
                              f"result deviates from contract {contract.value}: {listed}",
                              written=written)
        duration_ms = int((self.clock() - started) * 1000)
        self.records.record_result(
            task, ResultRecord(written.uri, written.rows, written.bytes, written.sha256,
                               contract.value), duration_ms, invalid)
        self.metrics.rows.inc(written.rows)
        self.metrics.bytes.labels(compression=task.output.compression.value).inc(written.bytes)
        self.metrics.peak_memory.set(peak_resident_bytes())
        log.info("task done", rows=written.rows, bytes=written.bytes, sha256=written.sha256,
                 contract=contract.value, duration_ms=duration_ms)
        return TaskResult(Outcome.DONE, written=written)

    def _fail(self, task: TaskMessage, kind: FailureKind, error: str,
              written: WrittenObject | None = None) -> TaskResult:
        self.records.mark_failed(task, kind, error)
        if kind is not FailureKind.SCHEMA_DRIFT:
            self.metrics.materialization_failures.labels(kind=kind.value).inc()
        log.error("task failed", kind=kind.value, error=error)
        return TaskResult(Outcome.FAILED, kind=kind, error=error, written=written)
