"""The Kafka protocol for the local stack: librdkafka's mock cluster in a host process.

No Kafka broker is installable here; the mock cluster inside the
confluent-kafka wheel speaks the real protocol with exact offsets and
watermarks, consumer groups and fault injection (see
:mod:`spatialjoin_devstack.kafka_mock`). The task and dead-letter topics are
pre-created because the mock has no CreateTopics admin API; more topics and
faults go through the control channel (:mod:`spatialjoin_devstack.kafka_control`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from confluent_kafka.admin import AdminClient

from .. import procs
from ..kafka_control import ReadyInfo
from ..waiting import wait_for
from .base import Settings, StackContext

TASK_TOPIC = "tasks"
DLQ_TOPIC = "tasks.dlq"
PARTITIONS = 12
BROKERS = 3
START_TIMEOUT = 30.0


class KafkaMockComponent:
    """Three mock brokers on 127.0.0.1 with the task and dead-letter topics (12 partitions)."""

    name = "kafka"

    def install(self, ctx: StackContext) -> None:
        """Nothing to install: the mock ships inside confluent-kafka, a project dependency."""

    def start(self, ctx: StackContext) -> Settings:
        """Start the host, wait for its ready file and a real Metadata answer, return settings."""
        procs.stop_process(ctx.run_dir, self.name)  # a stale host would hold old topics
        ready_file = self._ready_file(ctx)
        ready_file.unlink(missing_ok=True)
        pid = procs.start_process(self.name, self._argv(ready_file), ctx.run_dir)
        try:
            settings = self._await_ready(ctx, ready_file, pid)
            wait_for(
                lambda: self.healthy(ctx, settings), timeout=START_TIMEOUT, what="kafka health"
            )
        except BaseException:
            procs.stop_process(ctx.run_dir, self.name)
            raise
        return settings

    def _await_ready(self, ctx: StackContext, ready_file: Path, pid: int) -> Settings:
        """The ready file's settings; fail fast when the host dies instead of announcing."""
        outcome = wait_for(
            lambda: ReadyInfo.read(ready_file) or (None if procs.pid_alive(pid) else "exited"),
            timeout=START_TIMEOUT,
            what="kafka mock ready file",
        )
        if not isinstance(outcome, ReadyInfo):
            raise RuntimeError(f"kafka mock exited during start; see {ctx.run_dir / 'kafka.log'}")
        return {
            "bootstrap": outcome.bootstrap,
            "control": outcome.control,
            "topic": TASK_TOPIC,
            "dlq_topic": DLQ_TOPIC,
            "partitions": PARTITIONS,
        }

    def healthy(self, ctx: StackContext, settings: Settings) -> bool:
        """True when a real Metadata request shows the task topic with all its partitions."""
        return topic_ready(settings["bootstrap"], settings["topic"], PARTITIONS)

    def env(self, settings: Settings) -> dict[str, str]:
        return {
            "SPATIALJOIN_KAFKA_BOOTSTRAP": str(settings["bootstrap"]),
            "SPATIALJOIN_KAFKA_CONTROL": str(settings["control"]),
        }

    def stop(self, ctx: StackContext) -> None:
        procs.stop_process(ctx.run_dir, self.name)

    @staticmethod
    def _ready_file(ctx: StackContext) -> Path:
        return ctx.data_dir("kafka") / "ready.json"

    @staticmethod
    def _argv(ready_file: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "spatialjoin_devstack.kafka_mock",
            "--brokers",
            str(BROKERS),
            "--topic",
            f"{TASK_TOPIC}:{PARTITIONS}",
            "--topic",
            f"{DLQ_TOPIC}:{PARTITIONS}",
            "--control-port",
            "0",  # the host binds an ephemeral port and reports it in the ready file
            "--ready-file",
            str(ready_file),
        ]


def topic_ready(bootstrap: str, topic_name: str, partitions: int) -> bool:
    """True when a real Metadata request shows the topic with all its partitions."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    try:
        metadata = admin.list_topics(topic_name, timeout=5)
    except Exception:  # KafkaException: unreachable or metadata error means not healthy
        return False
    topic = metadata.topics.get(topic_name)
    return bool(topic and topic.error is None and len(topic.partitions) == partitions)
