"""`spatialjoin bench scaling`: how fast a WorkerPool follows lag, and that it does not flap.

On the running local stack (``spatialjoin stack up``) it makes a namespace, a
schema with the tiny dataset, fresh topics and a WorkerPool that may scale to
zero, runs the pool reconciler (``kopf run -m spatialjoin_operator.pool_handlers``)
at the product's observation interval, and measures:

1. **Threshold crossing.** A burst of tasks puts the lag over a small
   threshold at t0 (the pool has no worker, so the lag is exactly the burst).
   Reported: t0 to the Deployment's new replica count, to the first worker
   claiming a task, and to every new worker having claimed one, in seconds and
   as multiples of the interval (target: the replica count within 2).
   Scaling from zero keeps the figure about the operator: a worker already
   consuming would take the burst in flight, and its revoke handshake (finish
   in-flight tasks before giving partitions away) would be in the number.
2. **Oscillation.** Bursts of slow tasks every ``period`` seconds drive the
   lag above the threshold and back to zero, again and again. Reported: how
   often the sampled lag crossed the threshold, and how often the replica
   count changed or an action was taken (target: never).
3. **Step down.** Once the load stops: time from the lag clearing to the
   first step down (expected: one cooldown, plus up to one interval).

Workers run with a concurrency above any burst so that they never pause
their partitions (see the report: a worker paused during a rebalance stays
paused).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import typer
from rich.console import Console
from rich.table import Table

console = Console()
app = typer.Typer(help="Benchmarks that print figures (not tests).", no_args_is_help=True)


@app.callback()
def bench() -> None:
    """Benchmarks that print figures (not tests)."""


@app.command("scaling")
def scaling(
    interval: float = typer.Option(10.0, "--interval", help="Pool observation interval (s)."),
    threshold: int = typer.Option(10, "--threshold", help="escalation.p2.consumerLag."),
    cooldown: int = typer.Option(60, "--cooldown", help="escalation.cooldownSeconds."),
    cycles: int = typer.Option(8, "--cycles", help="Load bursts in the oscillation phase."),
    period: float = typer.Option(16.0, "--period", help="Seconds between bursts."),
    slow: float = typer.Option(
        4.0, "--slow", help="Sleep per read of the slow source; a task reads it twice "
                            "(the invalid-geometry count and the join)."),
    out: Path = typer.Option(Path("bench-results"), "--out",  # noqa: B008
                             help="Folder for scaling.json and the operator log."),
) -> None:
    """Lag over a small threshold: time to new replicas and consuming workers; no flapping."""
    out.mkdir(parents=True, exist_ok=True)
    with _bench_world(interval, threshold, cooldown, slow, out) as world:
        figures = {"interval_s": interval, "threshold": threshold, "cooldown_s": cooldown,
                   "crossing": _crossing(world),
                   "oscillation": _oscillation(world, cycles, period, slow),
                   "step_down": _step_down(world)}
    (out / "scaling.json").write_text(json.dumps(figures, indent=2, sort_keys=True))
    console.print(_table(figures))
    console.print(f"figures written to {out / 'scaling.json'}")


# --- the world --------------------------------------------------------------------------


@dataclass
class _World:
    namespace: str
    url: str
    bootstrap: str
    topic: str
    prefix: str
    interval: float
    threshold: int
    kube: Any
    samples: list[tuple[float, int]] = field(default_factory=list)

    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.kube)

    def pool(self) -> dict[str, Any]:
        from spatialjoin_contracts import api

        return cast(dict[str, Any], self.custom().get_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, api.POOL_PLURAL, "bench"))

    def replicas(self) -> int | None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            found = client.AppsV1Api(self.kube).read_namespaced_deployment("bench-workers",
                                                                           self.namespace)
        except ApiException:
            return None
        return int(found.spec.replicas or 0) if found.spec else None

    def ready(self) -> int:
        from kubernetes import client

        found = client.AppsV1Api(self.kube).read_namespaced_deployment("bench-workers",
                                                                       self.namespace)
        return int(found.status.ready_replicas or 0) if found.status else 0

    def actions(self) -> list[dict[str, Any]]:
        return list((self.pool().get("status") or {}).get("escalations") or [])

    def lag(self) -> int:
        from spatialjoin_contracts.partition_map import grid_partition_map
        from spatialjoin_operator.pool_observe import read_lag

        return read_lag(self.bootstrap, f"spatialjoin.{self.namespace}.bench", self.topic,
                        grid_partition_map()).total

    def publish(self, source: str, partitions: list[str], copies: int) -> float:
        """``copies`` tasks per partition; returns the wall-clock time they were acknowledged."""
        from confluent_kafka import Producer

        from spatialjoin_contracts import samples
        from spatialjoin_contracts.models import SpatialJoinJobSpec, WorkerPoolSpec
        from spatialjoin_contracts.task_message import JobIdentity, encode
        from spatialjoin_contracts.task_plan import plan_tasks

        pool = WorkerPoolSpec.model_validate(self.pool()["spec"])
        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all",
                             "enable.idempotence": True})
        for _ in range(copies):
            job = SpatialJoinJobSpec.model_validate(samples.job_spec(
                "bench", partitions=partitions, output={"uriPrefix": self.prefix},
                source={"polygons": {"table": source}, "points": {"table": "domain_b_points"}},
                traceId=f"bench-{uuid.uuid4().hex[:12]}"))
            identity = JobIdentity(namespace=self.namespace, name="bench", uid=str(uuid.uuid4()))
            for task in plan_tasks(job, pool, identity, enqueued_at=datetime.now(UTC)):
                encoded = encode(task)
                producer.produce(self.topic, key=encoded.key, value=encoded.value,
                                 partition=encoded.partition, headers=list(encoded.headers))
        if producer.flush(30):
            raise RuntimeError("tasks were not acknowledged")
        return time.time()

    def claims(self, since: float) -> list[tuple[str, float]]:
        """(worker, first claim as epoch seconds) of every worker that started a task since."""
        import psycopg

        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                "SELECT worker, EXTRACT(EPOCH FROM min(started_at))::float8 "
                "FROM spatial_async_jobs WHERE started_at >= to_timestamp(%s) "
                "AND worker IS NOT NULL GROUP BY 1 ORDER BY 2", (since,)).fetchall()
        return [(str(r[0]), float(r[1])) for r in rows]


@contextmanager
def _bench_world(interval: float, threshold: int, cooldown: int, slow: float, out: Path
                 ) -> Iterator[_World]:
    import psycopg
    from kubernetes import client, config

    from spatialjoin_contracts import api
    from spatialjoin_contracts.crd_generate import job_crd, pool_crd
    from spatialjoin_contracts.dataset_load import load_dataset
    from spatialjoin_contracts.ddl import migrate
    from spatialjoin_contracts.partition_map import grid_partition_map
    from spatialjoin_devstack import stack
    from spatialjoin_devstack.kafka_control import KafkaControl

    if not all(row.healthy for row in stack.status()):
        raise typer.BadParameter("the local stack is not up: run `spatialjoin stack up` first")
    settings, env = stack.context().settings, stack.env()
    kube = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=env["KUBECONFIG"])
    run = uuid.uuid4().hex[:8]
    namespace, schema = f"bench-scaling-{run}", f"bench_scaling_{run}"
    base_url = settings["postgis"]["url"]
    url = f"{base_url}{'&' if '?' in base_url else '?'}options=-csearch_path%3D{schema},public"
    core = client.CoreV1Api(kube)
    _apply_crds(client.ApiextensionsV1Api(kube), [job_crd(), pool_crd()])
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    operator: subprocess.Popen[bytes] | None = None
    try:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        with psycopg.connect(url) as conn:
            with conn.transaction(), conn.cursor() as cur:
                migrate(cur)
            load_dataset(conn, grid_partition_map(), scale="tiny", seed=7)
            conn.execute(f"CREATE VIEW slow_polygons AS SELECT * FROM domain_a_polygons "
                         f"WHERE (SELECT pg_sleep({float(slow)})::text) IS NOT NULL")
            conn.commit()
        topic = f"bench-scaling-{run}"
        for name in (topic, f"{topic}.dlq"):
            KafkaControl(settings["kafka"]["control"]).create_topic(name, 12)
        s3 = settings["s3"]
        for name, data in (("bench-db", {"url": url}),
                           ("bench-s3", {"AWS_ACCESS_KEY_ID": s3["access_key"],
                                         "AWS_SECRET_ACCESS_KEY": s3["secret_key"]})):
            core.create_namespaced_secret(namespace, client.V1Secret(
                metadata=client.V1ObjectMeta(name=name), string_data=data))
        operator = _start_operator(namespace, interval, env, out / "scaling-operator.log")
        world = _World(namespace, url, settings["kafka"]["bootstrap"], topic,
                       f"s3://{s3['bucket']}/bench-scaling/{run}", interval, threshold, kube)
        world.custom().create_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.POOL_PLURAL,
            _pool_manifest(namespace, settings, topic, threshold, cooldown))
        yield world
    finally:
        _teardown(kube, namespace, operator, base_url, schema)


def _apply_crds(extensions: Any, crds: list[dict[str, Any]]) -> None:
    from kubernetes.client.exceptions import ApiException

    for crd in crds:
        name = crd["metadata"]["name"]
        try:
            current = extensions.read_custom_resource_definition(name)
        except ApiException:
            extensions.create_custom_resource_definition(crd)
            continue
        body = {**crd, "metadata": {**crd["metadata"],
                                    "resourceVersion": current.metadata.resource_version}}
        extensions.replace_custom_resource_definition(name, body)


def _pool_manifest(namespace: str, settings: dict[str, Any], topic: str, threshold: int,
                   cooldown: int) -> dict[str, Any]:
    from spatialjoin_contracts import samples

    manifest = samples.pool_object("bench", namespace)
    manifest["spec"].update({
        "broker": {"bootstrapServers": settings["kafka"]["bootstrap"], "topic": topic,
                   "deadLetterTopic": f"{topic}.dlq"},
        "database": {"urlSecretRef": {"name": "bench-db", "key": "url"}},
        "storage": {"secretRef": {"name": "bench-s3"}, "endpoint": settings["s3"]["endpoint"]},
        "replicas": {"min": 0, "max": 4}, "concurrency": 32, "maxHeapMb": 9216,
        "escalation": {"cooldownSeconds": cooldown, "p2": {"consumerLag": threshold},
                       "p3": {"latencySeconds": 3600, "concurrency": 32}},
    })
    return manifest


def _start_operator(namespace: str, interval: float, env: dict[str, str],
                    log: Path) -> subprocess.Popen[bytes]:
    from spatialjoin_devstack.procs import free_port

    with open(log, "wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", namespace,
             "-m", "spatialjoin_operator.pool_handlers"],
            env={**os.environ, **env, "SPATIALJOIN_OPERATOR_POOL_INTERVAL_S": str(interval),
                 "SPATIALJOIN_OPERATOR_METRICS_PORT": str(free_port())},
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def _teardown(kube: Any, namespace: str, operator: subprocess.Popen[bytes] | None,
              base_url: str, schema: str) -> None:
    import psycopg
    from kubernetes import client

    from spatialjoin_contracts import api
    from spatialjoin_devstack.waiting import wait_for

    custom = client.CustomObjectsApi(kube)
    try:
        custom.delete_namespaced_custom_object(api.GROUP, api.VERSION, namespace,
                                               api.POOL_PLURAL, "bench")
        wait_for(lambda: not cast(dict[str, Any], custom.list_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.POOL_PLURAL))["items"], timeout=60,
            what="the pool deleted (its timer holds a finalizer)")
    except Exception as exc:
        console.print(f"[yellow]cleanup: {exc}[/yellow]")
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(30)
        client.CoreV1Api(kube).delete_namespace(namespace)
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# --- the three phases -------------------------------------------------------------------


def _until(probe: Callable[[], Any], timeout: float, what: str) -> float:
    from spatialjoin_devstack.waiting import wait_for

    wait_for(probe, timeout=timeout, interval=0.1, what=what)
    return time.time()


def _crossing(world: _World) -> dict[str, Any]:
    console.print("phase 1: lag over the threshold, from zero workers")
    _until(lambda: world.replicas() == 0 and world.actions() == [], 120, "an idle pool")
    partitions = [f"p{i:02d}" for i in range(12)]
    copies = world.threshold // len(partitions) + 2
    t0 = world.publish("domain_a_polygons", partitions, copies)
    replicas_at = _until(lambda: (world.replicas() or 0) > 0, 20 * world.interval,
                         "the Deployment scaled up")
    wanted = world.replicas() or 0
    _until(lambda: world.claims(t0 - 1), 20 * world.interval, "a worker consuming")
    ready_at = _until(lambda: world.ready() >= wanted, 30 * world.interval,
                      "every new worker ready")
    first = world.claims(t0 - 1)[0][1]

    def intervals(seconds: float) -> float:
        return seconds / world.interval

    return {
        "tasks": copies * len(partitions), "new_replicas": wanted,
        "to_replicas_s": replicas_at - t0, "to_replicas_intervals": intervals(replicas_at - t0),
        "to_first_consuming_s": first - t0, "to_first_consuming_intervals": intervals(first - t0),
        "to_all_ready_s": ready_at - t0, "to_all_ready_intervals": intervals(ready_at - t0),
    }


def _oscillation(world: _World, cycles: int, period: float, slow: float) -> dict[str, Any]:
    console.print(f"phase 2: {cycles} bursts of {slow:g} s tasks every {period:g} s")
    _until(lambda: world.lag() == 0, 20 * world.interval, "the first burst drained")
    actions_before, replicas_before = len(world.actions()), world.replicas()
    changes, samples = 0, []
    observed: dict[str, int] = {}  # the operator's own observations, by time
    last = replicas_before
    started = time.time()
    partitions = [f"p{i:02d}" for i in range(12)]
    copies = world.threshold // len(partitions) + 1
    for cycle in range(cycles):
        world.publish("slow_polygons", partitions, copies)
        deadline = started + (cycle + 1) * period
        while time.time() < deadline:
            samples.append((time.time() - started, world.lag()))
            seen = (world.pool().get("status") or {}).get("lag") or {}
            observed[str(seen.get("observedTime"))] = int(seen.get("total", 0))
            now = world.replicas()
            changes += int(now != last)
            last = now
            time.sleep(0.5)  # sampling, in a script
    above = [lag > world.threshold for _t, lag in samples]
    crossings = sum(1 for a, b in itertools.pairwise(above) if a != b)
    return {"bursts": cycles, "period_s": period, "task_s": slow,
            "tasks_per_burst": copies * len(partitions),
            "sampled_threshold_crossings": crossings, "replica_changes": changes,
            "actions": len(world.actions()) - actions_before,
            "replicas": replicas_before, "max_lag": max(lag for _t, lag in samples),
            "operator_saw_above": sum(1 for v in observed.values() if v > world.threshold),
            "operator_saw_clear": sum(1 for v in observed.values()
                                      if v <= world.threshold * 0.8)}


def _step_down(world: _World) -> dict[str, Any]:
    console.print("phase 3: load stopped; waiting for the first step down")
    cleared = _until(lambda: world.lag() <= world.threshold * 0.8, 60 * world.interval,
                     "the lag cleared")
    before = len([a for a in world.actions() if a["action"] == "StepDown"])
    stepped = _until(lambda: len([a for a in world.actions() if a["action"] == "StepDown"])
                     > before, 60 * world.interval, "a step down")
    return {"clear_to_step_down_s": stepped - cleared, "replicas_after": world.replicas()}


def _table(figures: dict[str, Any]) -> Table:
    cross, osc, down = figures["crossing"], figures["oscillation"], figures["step_down"]
    interval = figures["interval_s"]
    table = Table("figure", "value", title=f"WorkerPool scaling (interval {interval:g} s)")
    table.add_row("crossing → Deployment replicas (target ≤ 2 intervals)",
                  f"{cross['to_replicas_s']:.1f} s = {cross['to_replicas_intervals']:.2f} x")
    table.add_row("crossing → first worker consuming",
                  f"{cross['to_first_consuming_s']:.1f} s = "
                  f"{cross['to_first_consuming_intervals']:.2f} x")
    table.add_row(f"crossing → all {cross['new_replicas']} new workers ready",
                  f"{cross['to_all_ready_s']:.1f} s = {cross['to_all_ready_intervals']:.2f} x")
    table.add_row("oscillation: sampled threshold crossings",
                  str(osc["sampled_threshold_crossings"]))
    table.add_row("oscillation: operator observations above / clear",
                  f"{osc['operator_saw_above']} / {osc['operator_saw_clear']}")
    table.add_row("oscillation: replica changes / actions (target 0)",
                  f"{osc['replica_changes']} / {osc['actions']}")
    table.add_row("lag clear → first step down (cooldown "
                  f"{figures['cooldown_s']} s)", f"{down['clear_to_step_down_s']:.1f} s")
    return table
