"""The consumer loop: poll, run up to `concurrency` tasks at once, commit only what is finished.

Auto-commit and auto offset-store are off. A task's offset becomes
committable only when its result is recorded or it is dead-lettered
(OffsetTracker keeps the commit point below any unfinished task). Commits are
throttled, and forced on partition revocation and on shutdown.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from spatialjoin_contracts.task_message import MalformedTask, decode

from .dead_letter import DeadLetters
from .failures import FailureClass, classify
from .metrics import WorkerMetrics
from .offsets import OffsetTracker
from .offsets import TopicPartition as TP
from .task import Outcome, TaskProcessor, TaskResult, TaskStopped

log = structlog.get_logger("spatialjoin.worker.consumer")


def headers_of(message: Message) -> list[tuple[str, str | bytes | None]]:
    """A record's headers as a list of pairs, whichever shape the client returns."""
    raw = message.headers()
    if raw is None:
        return []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)


@dataclass(frozen=True)
class Finished:
    tp: TP
    offset: int
    committable: bool


class WorkerLoop:
    """Owns the Kafka consumer; task threads never touch it (it is not thread-safe)."""

    def __init__(self, consumer_config: dict[str, Any], topic: str, processor: TaskProcessor,
                 dead_letters: DeadLetters, metrics: WorkerMetrics, *, concurrency: int,
                 commit_interval_s: float, stop: threading.Event,
                 shutdown_grace_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._consumer = Consumer({**consumer_config, "enable.auto.commit": False,
                                   "enable.auto.offset.store": False})
        self._topic = topic
        self._processor = processor
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._concurrency = concurrency
        self._commit_interval_s = commit_interval_s
        self._stop = stop
        self._grace_s = shutdown_grace_s
        self._clock = clock
        self._tracker = OffsetTracker()
        self._done: queue.Queue[Finished] = queue.Queue()
        self._futures: dict[tuple[TP, int], Future[None]] = {}
        self._paused = False
        self._last_commit = 0.0
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="task")
        metrics.concurrency.set(concurrency)

    def run(self) -> None:
        self._consumer.subscribe([self._topic], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)
        log.info("worker consuming", topic=self._topic, concurrency=self._concurrency)
        try:
            while not self._stop.is_set():
                self._drain_finished()
                self._apply_backpressure()
                message = self._consumer.poll(0.2)
                if message is not None:
                    self._dispatch(message)
                self._maybe_commit()
        finally:
            self._shutdown()

    # -- dispatch -------------------------------------------------------------

    def _dispatch(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", error=str(error))
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            log.warning("message without position ignored")
            return
        tp: TP = (topic, partition)
        self._tracker.started(tp, offset)
        self._metrics.in_flight.set(self._tracker.in_flight())
        self._futures[(tp, offset)] = self._pool.submit(self._handle, message, tp, offset)

    def _handle(self, message: Message, tp: TP, offset: int) -> None:
        """Runs in a task thread; reports back through the queue, never raises."""
        source = f"{tp[0]}/{tp[1]}@{offset}"
        started = self._clock()
        committable = True
        try:
            task = decode(message.value(), headers_of(message))
        except MalformedTask as exc:
            committable = self._dead_letter(message, reason=exc.reason.value, error=str(exc),
                                            stage="decode", source=source)
            self._metrics.tasks.labels(outcome="malformed").inc()
            self._done.put(Finished(tp, offset, committable))
            return
        try:
            result = self._process_with_retries(task)
        except TaskStopped:
            committable = False
            result = TaskResult(Outcome.FAILED, error="stopped")
        except Exception as exc:  # bookkeeping itself kept failing: leave it for redelivery
            log.exception("task crashed; it will be redelivered", source=source)
            committable = False
            result = TaskResult(Outcome.FAILED, error=f"{type(exc).__name__}: {exc}")
        if result.outcome is Outcome.FAILED and committable:
            committable = self._dead_letter(
                message, reason=result.kind.value if result.kind else "failed",
                error=result.error or "", stage="materialize", source=source)
        self._metrics.tasks.labels(outcome=result.outcome.value).inc()
        self._metrics.task_duration.labels(outcome=result.outcome.value).observe(
            self._clock() - started)
        self._done.put(Finished(tp, offset, committable))

    def _process_with_retries(self, task: Any) -> TaskResult:
        """Bookkeeping (claim, record) failures are retried like the join's own."""
        retry = 0
        while True:
            try:
                return self._processor.process(task)
            except TaskStopped:
                raise
            except Exception as exc:
                retry += 1
                policy = self._processor.retry
                if classify(exc) is FailureClass.PERMANENT or not policy.should_retry(retry):
                    raise
                self._metrics.retries.labels(stage="bookkeeping").inc()
                if self._stop.wait(policy.delay(retry)):
                    raise TaskStopped("shutdown during backoff") from exc

    def _dead_letter(self, message: Message, *, reason: str, error: str, stage: str,
                     source: str) -> bool:
        """True once the dead-letter topic has the record; False leaves it uncommitted."""
        try:
            self._dead_letters.publish(key=message.key(), value=message.value(),
                                       headers=headers_of(message), reason=reason, error=error,
                                       stage=stage, source=source)
        except Exception:
            log.exception("dead-letter publish failed; task stays uncommitted", source=source)
            return False
        self._metrics.dead_lettered.labels(reason=reason).inc()
        log.error("task dead-lettered", reason=reason, error=error, source=source)
        return True

    # -- completion, backpressure, commits -------------------------------------

    def _drain_finished(self) -> None:
        while True:
            try:
                finished = self._done.get_nowait()
            except queue.Empty:
                break
            self._futures.pop((finished.tp, finished.offset), None)
            if finished.committable:
                self._tracker.finished(finished.tp, finished.offset)
            else:
                self._redeliver(finished)
        self._metrics.in_flight.set(self._tracker.in_flight())

    def _redeliver(self, finished: Finished) -> None:
        """An unfinished task stays in flight (pinning the commit point) and is read again."""
        if self._stop.is_set():
            return
        try:
            self._consumer.seek(TopicPartition(finished.tp[0], finished.tp[1], finished.offset))
        except KafkaException as exc:
            log.warning("seek for redelivery failed; a rebalance will redeliver",
                        error=str(exc))

    def _apply_backpressure(self) -> None:
        full = self._tracker.in_flight() >= self._concurrency
        if full == self._paused:
            return
        assignment = self._consumer.assignment()
        if full:
            self._consumer.pause(assignment)
        else:
            self._consumer.resume(assignment)
        self._paused = full

    def _maybe_commit(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last_commit < self._commit_interval_s:
            return
        points = self._tracker.to_commit()
        self._last_commit = now
        if not points:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in points.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("commit failed; will retry", error=str(exc))
            return
        self._tracker.committed(points)

    # -- rebalance and shutdown ------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """New partitions follow the current backpressure state either way: librdkafka
        keeps a partition's pause flag across a rebalance, so a partition paused
        before it was revoked would otherwise stay paused forever here."""
        log.info("partitions assigned", partitions=[p.partition for p in partitions])
        (consumer.pause if self._paused else consumer.resume)(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish (bounded) what runs on the revoked partitions, commit it, then let go."""
        revoked = [(p.topic, p.partition) for p in partitions]
        self._wait_in_flight(revoked, self._grace_s)
        self._drain_finished()
        self._maybe_commit(force=True)
        self._tracker.forget(revoked)
        log.info("partitions revoked", partitions=[p.partition for p in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._tracker.forget([(p.topic, p.partition) for p in partitions])

    def _wait_in_flight(self, tps: list[TP] | None, timeout: float) -> None:
        deadline = self._clock() + timeout
        for (tp, _offset), future in list(self._futures.items()):
            if tps is not None and tp not in tps:
                continue
            remaining = max(0.0, deadline - self._clock())
            try:
                future.result(timeout=remaining)
            except Exception:  # a future that timed out stays uncommitted: redelivered
                continue

    def _shutdown(self) -> None:
        """Stop fetching, finish in-flight tasks within the grace period, commit, close."""
        log.info("worker stopping", in_flight=self._tracker.in_flight())
        self._wait_in_flight(None, self._grace_s)
        self._drain_finished()
        self._maybe_commit(force=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._consumer.close()
        self._dead_letters.close()
        log.info("worker stopped")
