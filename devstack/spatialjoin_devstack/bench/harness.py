"""What every benchmark needs: a stack, a schema with the dataset, fresh topics, workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Producer

from spatialjoin_contracts import samples
from spatialjoin_contracts.dataset_load import load_dataset
from spatialjoin_contracts.ddl import migrate
from spatialjoin_contracts.models.job import SpatialJoinJobSpec
from spatialjoin_contracts.models.pool import WorkerPoolSpec
from spatialjoin_contracts.partition_map import grid_partition_map
from spatialjoin_contracts.task_message import JobIdentity, TaskMessage, encode
from spatialjoin_contracts.task_plan import plan_tasks

from .. import stack
from ..kafka_control import KafkaControl
from ..procs import free_port
from ..waiting import wait_for
from .cpu import CpuWindow, process_cpu_seconds


@contextmanager
def running_stack() -> Iterator[dict[str, Any]]:
    """The running stack's settings; a stack started here is stopped afterwards."""
    started = False
    if not all(row.healthy for row in stack.status()):
        stack.up()
        started = True
    try:
        yield stack.context().settings
    finally:
        if started:
            stack.down()


def schema_url(database_url: str, schema: str) -> str:
    separator = "&" if "?" in database_url else "?"
    return f"{database_url}{separator}options=-csearch_path%3D{schema},public"


def prepare_dataset(database_url: str, scale: str, seed: int) -> str:
    """A schema holding the dataset at ``scale``; reused when already loaded with that seed."""
    schema = f"bench_{scale}_{seed}"
    url = schema_url(database_url, schema)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        loaded = conn.execute(
            "SELECT obj_description(%s::regnamespace, 'pg_namespace')", (schema,)).fetchone()
    with psycopg.connect(url) as conn:
        with conn.transaction(), conn.cursor() as cur:
            migrate(cur)
        if not loaded or loaded[0] != "loaded":
            load_dataset(conn, grid_partition_map(), scale=scale, seed=seed)
            conn.execute(f"COMMENT ON SCHEMA {schema} IS 'loaded'")
            conn.commit()
    return url


@dataclass
class BenchWorld:
    """One benchmark run's topics, group, bucket prefix and connection settings."""

    settings: dict[str, Any]
    database_url: str
    topic: str
    dlq: str
    prefix: str

    @classmethod
    def create(cls, settings: dict[str, Any], database_url: str) -> BenchWorld:
        control = KafkaControl(settings["kafka"]["control"])
        run = uuid.uuid4().hex[:8]
        topic, dlq = f"bench-{run}", f"bench-{run}.dlq"
        for name in (topic, dlq):
            control.create_topic(name, 12)
        return cls(settings, database_url, topic, dlq,
                   f"s3://{settings['s3']['bucket']}/bench/{run}")

    def worker_env(self, group: str, **extra: str) -> dict[str, str]:
        s3 = self.settings["s3"]
        return {
            "SPATIALJOIN_KAFKA_BOOTSTRAP": self.settings["kafka"]["bootstrap"],
            "SPATIALJOIN_TOPIC": self.topic, "SPATIALJOIN_DEAD_LETTER_TOPIC": self.dlq,
            "SPATIALJOIN_CONSUMER_GROUP": group, "SPATIALJOIN_DATABASE_URL": self.database_url,
            "SPATIALJOIN_S3_ENDPOINT": s3["endpoint"], "AWS_ACCESS_KEY_ID": s3["access_key"],
            "AWS_SECRET_ACCESS_KEY": s3["secret_key"], "SPATIALJOIN_LOG_LEVEL": "INFO",
            "SPATIALJOIN_METRICS_PORT": str(free_port()),
            # As the WorkerPool's Deployment sets them (see worker memory.tune_allocators).
            "MALLOC_ARENA_MAX": "2", "ARROW_DEFAULT_MEMORY_POOL": "system", **extra}

    def tasks(self, **job: Any) -> list[TaskMessage]:
        raw = samples.job_spec(output={"uriPrefix": self.prefix, **job.pop("output", {})})
        raw.update(job)
        spec = SpatialJoinJobSpec.model_validate(raw)
        pool = WorkerPoolSpec.model_validate(samples.pool_spec())
        identity = JobIdentity(namespace="bench", name="bench", uid=str(uuid.uuid4()))
        return plan_tasks(spec, pool, identity, enqueued_at=datetime.now(UTC))

    def publish(self, tasks: list[TaskMessage]) -> None:
        producer = Producer({"bootstrap.servers": self.settings["kafka"]["bootstrap"],
                             "acks": "all", "enable.idempotence": True, "linger.ms": 5})
        for task in tasks:
            encoded = encode(task)
            producer.produce(self.topic, key=encoded.key, value=encoded.value,
                             partition=encoded.partition, headers=list(encoded.headers))
        if producer.flush(30):
            raise RuntimeError("tasks were not acknowledged")

    def done_count(self, trace_id: str) -> int:
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute("SELECT count(*) FILTER (WHERE status = 'done'), "
                               "count(*) FILTER (WHERE status = 'failed') "
                               "FROM spatial_async_jobs WHERE trace_id = %s",
                               (trace_id,)).fetchone()
        assert row is not None
        if row[1]:
            raise RuntimeError(f"{row[1]} partition(s) of {trace_id} failed")
        return int(row[0])

    def first_claim(self, trace_id: str) -> float:
        """When the first partition was claimed (epoch seconds): the pickup latency's end."""
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute("SELECT extract(epoch FROM min(started_at)) "
                               "FROM spatial_async_jobs WHERE trace_id = %s",
                               (trace_id,)).fetchone()
        assert row is not None and row[0] is not None
        return float(row[0])

    def results(self, trace_id: str) -> list[tuple[str, int, int, int]]:
        """(partition, rows, bytes, duration_ms) per partition."""
        with psycopg.connect(self.database_url) as conn:
            rows = conn.execute(
                "SELECT j.partition_key, r.rows, r.bytes, j.duration_ms "
                "FROM spatial_join_results r JOIN spatial_async_jobs j USING "
                "(trace_id, partition_key) WHERE trace_id = %s ORDER BY 1",
                (trace_id,)).fetchall()
        return [(r[0], int(r[1]), int(r[2]), int(r[3] or 0)) for r in rows]


class WorkerProcess:
    """A `spatialjoin worker` subprocess whose CPU time and peak RSS we read from /proc."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        spatialjoin = str(Path(sys.executable).parent / "spatialjoin")
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([spatialjoin, "worker"], env={**os.environ, **env},
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_assigned(self, timeout: float = 60) -> None:
        wait_for(lambda: "partitions assigned" in self.log.read_text(errors="replace"),
                 timeout=timeout, interval=0.05, what="worker to join its group")

    def peak_rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def run_job(world: BenchWorld, log_dir: Path, *, label: str, concurrency: int = 8,
            engine: str = "postgis", **job: Any) -> dict[str, Any]:
    """Publish a 12-partition job to a fresh worker; time publish → all partitions done.

    CPU: the worker process's, the database's (server and backends) and the
    whole machine's busy seconds over the same window.
    """
    tasks = world.tasks(**job)
    trace_id = tasks[0].trace_id
    worker = WorkerProcess(world.worker_env(f"bench-{uuid.uuid4().hex[:8]}",
                                            SPATIALJOIN_CONCURRENCY=str(concurrency),
                                            SPATIALJOIN_ENGINE=engine),
                           log_dir / f"worker-{label}.log")
    window = CpuWindow(world.database_url)
    try:
        worker.wait_assigned()
        cpu_before = worker.cpu_seconds()
        window.start()
        started = time.perf_counter()
        published_at = time.time()
        world.publish(tasks)
        wait_for(lambda: world.done_count(trace_id) == len(tasks), timeout=1800, interval=0.02,
                 what=f"{label}: all partitions done")
        seconds = time.perf_counter() - started
        cpu = worker.cpu_seconds() - cpu_before
        window.stop()
        peak = worker.peak_rss_bytes()
    finally:
        worker.stop()
    per_partition = world.results(trace_id)
    return {"label": label, "engine": engine, "seconds": seconds, "worker_cpu_seconds": cpu,
            "first_claim_s": world.first_claim(trace_id) - published_at,
            "database_cpu_seconds": window.database_s, "services_cpu_seconds": window.services_s,
            "machine_cpu_seconds": window.machine_s,
            "peak_rss_mb": peak / 2**20, "rows": sum(p[1] for p in per_partition),
            "bytes": sum(p[2] for p in per_partition),
            "partitions": {p[0]: {"rows": p[1], "bytes": p[2], "task_ms": p[3]}
                           for p in per_partition}}
