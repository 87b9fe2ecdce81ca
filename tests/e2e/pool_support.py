"""The WorkerPool end-to-end world: CRDs, a namespace with Secrets, a loaded schema, topics,
and the pool reconciler running as its own process (``kopf run -m
spatialjoin_operator.pool_handlers``) with a short observation interval.

The local runner runs the Deployment's pods as worker processes, so the
workers here are the ones the operator made. Tests publish tasks themselves
(no job handlers run); every read of the world waits with a deadline.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import psycopg
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from spatialjoin_contracts import api, samples
from spatialjoin_contracts.crd_generate import job_crd, pool_crd
from spatialjoin_contracts.models import SpatialJoinJobSpec, WorkerPoolSpec
from spatialjoin_contracts.task_message import JobIdentity
from spatialjoin_contracts.task_plan import plan_tasks
from spatialjoin_devstack.kafka_control import KafkaControl
from spatialjoin_devstack.waiting import wait_for
from spatialjoin_operator import children
from tests.support.kafka import publish
from tests.support.operator import KopfProcess, apply_crds
from tests.support.pool_world import create_pool_secrets, load_tiny_dataset

T = TypeVar("T")
INTERVAL_S = 2.0
"""The pool timer's interval in these tests (the product's default is 10 s)."""
DB_SECRET = "pool-db"
S3_SECRET = "pool-s3"
POOL = "pool"


@pytest.fixture(scope="session")
def pool_crds(kube_api: Any) -> None:
    """The CRDs generated from the contracts, applied and served."""
    apply_crds(kube_api, (job_crd(), pool_crd()))


@dataclass
class PoolWorld:
    namespace: str
    database_url: str
    bootstrap: str
    control: KafkaControl
    topic: str
    dlq: str
    bucket_path: str
    s3: dict[str, Any]
    kube_api: Any
    env: dict[str, str]
    log_dir: Path
    name: str = POOL

    # --- Kubernetes -----------------------------------------------------------------------

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.kube_api)

    @property
    def group(self) -> str:
        return f"spatialjoin.{self.namespace}.{self.name}"

    def pool_manifest(self, **spec: Any) -> dict[str, Any]:
        manifest = samples.pool_object(self.name, self.namespace)
        manifest["spec"].update({
            "broker": {"bootstrapServers": self.bootstrap, "topic": self.topic,
                       "deadLetterTopic": self.dlq},
            "database": {"urlSecretRef": {"name": DB_SECRET, "key": "url"}},
            "storage": {"secretRef": {"name": S3_SECRET}, "endpoint": self.s3["endpoint"]},
        })
        manifest["spec"].update(spec)
        return manifest

    def create_pool(self, **spec: Any) -> dict[str, Any]:
        return cast(dict[str, Any], self.custom.create_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, api.POOL_PLURAL, self.pool_manifest(**spec)))

    def pool(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, api.POOL_PLURAL, self.name))

    def delete_pools(self, timeout: float = 60) -> None:
        """Delete every pool of the namespace and wait until they are gone."""
        def pools() -> list[Any]:
            found = self.custom.list_namespaced_custom_object(
                api.GROUP, api.VERSION, self.namespace, api.POOL_PLURAL)
            return cast(list[Any], found["items"])

        for item in pools():
            self.custom.delete_namespaced_custom_object(
                api.GROUP, api.VERSION, self.namespace, api.POOL_PLURAL,
                item["metadata"]["name"])
        try:
            wait_for(lambda: not pools(), timeout=timeout, interval=0.25, what="pools deleted")
        except TimeoutError:  # no operator to let go: drop its finalizer, keep the cluster clean
            for item in pools():
                self.custom.patch_namespaced_custom_object(
                    api.GROUP, api.VERSION, self.namespace, api.POOL_PLURAL,
                    item["metadata"]["name"], {"metadata": {"finalizers": []}})
            raise

    def pool_spec(self) -> WorkerPoolSpec:
        return WorkerPoolSpec.model_validate(self.pool()["spec"])

    def status(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.pool().get("status") or {})

    def annotate(self, key: str, value: str) -> None:
        self.custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, api.POOL_PLURAL, self.name,
            {"metadata": {"annotations": {key: value}}})

    def wait_status(self, probe: Callable[[dict[str, Any]], T | bool | None], *,
                    timeout: float, what: str) -> T:
        """``probe(status)`` once it is truthy; the status in the failure message."""
        try:
            return cast(T, wait_for(lambda: probe(self.status()), timeout=timeout,
                                    interval=0.25, what=what))
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; status: {json.dumps(self.status(), indent=1)}"
                                 ) from exc

    def deployment(self) -> dict[str, Any] | None:
        apps = client.AppsV1Api(self.kube_api)
        try:
            found = apps.read_namespaced_deployment(children.child_names(self.name).deployment,
                                                    self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], self.kube_api.sanitize_for_serialization(found))

    def deployment_env(self) -> dict[str, str]:
        found = self.deployment() or {}
        container = found["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value", "") for e in container.get("env", [])}

    def replicas(self) -> int | None:
        found = self.deployment()
        return None if found is None else int(found["spec"]["replicas"])

    def ready_pods(self, **env: str) -> list[str]:
        """Names of the pool's Ready pods whose spec has ``env`` (all when empty)."""
        core = client.CoreV1Api(self.kube_api)
        selector = ",".join(f"{k}={v}" for k, v in children.selector_labels(self.name).items())
        names = []
        for pod in core.list_namespaced_pod(self.namespace, label_selector=selector).items:
            values = {e.name: e.value for e in pod.spec.containers[0].env or []}
            ready = any(c.type == "Ready" and c.status == "True"
                        for c in (pod.status.conditions or []))
            if ready and pod.metadata.deletion_timestamp is None and \
                    all(values.get(k) == v for k, v in env.items()):
                names.append(pod.metadata.name)
        return names

    def pods(self) -> int:
        core = client.CoreV1Api(self.kube_api)
        selector = ",".join(f"{k}={v}" for k, v in children.selector_labels(self.name).items())
        return len(core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def events(self) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the pool's Events."""
        core = client.CoreV1Api(self.kube_api)
        found = core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={self.name}").items
        return [(e.type, e.reason, e.message) for e in found]

    def create_job(self, name: str, **spec: Any) -> tuple[str, SpatialJoinJobSpec]:
        """A SpatialJoinJob object (nothing reconciles it here): its uid and parsed spec."""
        manifest = samples.job_object(name, self.namespace, self.name,
                                      output={"uriPrefix": f"s3://{self.bucket_path}"})
        manifest["spec"].update(spec)
        created = cast(dict[str, Any], self.custom.create_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, api.JOB_PLURAL, manifest))
        return created["metadata"]["uid"], SpatialJoinJobSpec.model_validate(created["spec"])

    # --- tasks, the database ------------------------------------------------------------

    def publish_job(self, job: SpatialJoinJobSpec, uid: str | None = None,
                    trace_id: str | None = None) -> int:
        """The job's tasks on the pool's topic, as the job handlers would publish them."""
        uid = uid or str(uuid.uuid4())
        if trace_id:
            job = job.model_copy(update={"trace_id": trace_id})
        identity = JobIdentity(namespace=self.namespace, name="job", uid=uid)
        tasks = plan_tasks(job, self.pool_spec(), identity, enqueued_at=datetime.now(UTC))
        return publish(self.bootstrap, self.topic, tasks)

    def job_spec(self, **spec: Any) -> SpatialJoinJobSpec:
        raw = samples.job_spec(self.name, output={"uriPrefix": f"s3://{self.bucket_path}"})
        raw.update(spec)
        return SpatialJoinJobSpec.model_validate(raw)

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.database_url, autocommit=True)

    def slow_view(self, name: str, seconds: float) -> None:
        """A polygon source whose every query sleeps ``seconds`` once: a slow task."""
        with self.connect() as conn:
            conn.execute(f"CREATE VIEW {name} AS SELECT * FROM domain_a_polygons "
                         f"WHERE (SELECT pg_sleep({seconds})::text) IS NOT NULL")


@pytest.fixture
def pool_world(pool_crds: None, namespace: str, db_schema: tuple[str, str],
               topic_names: dict[str, str], s3_prefix: str, kafka_settings: dict[str, Any],
               stack_settings: dict[str, Any], stack_env: dict[str, str], kube_api: Any,
               tmp_path: Path) -> PoolWorld:
    _, url = db_schema
    load_tiny_dataset(url, invalid_fraction=0.01)
    s3 = stack_settings["s3"]
    create_pool_secrets(kube_api, namespace, db_secret=DB_SECRET, s3_secret=S3_SECRET,
                        database_url=url, s3=s3)
    return PoolWorld(namespace=namespace, database_url=url,
                     bootstrap=kafka_settings["bootstrap"],
                     control=KafkaControl(kafka_settings["control"]),
                     topic=topic_names["tasks"], dlq=topic_names["dlq"], bucket_path=s3_prefix,
                     s3=s3, kube_api=kube_api, env=dict(stack_env), log_dir=tmp_path / "logs")


# --- the operator -----------------------------------------------------------------------


class PoolOperator(KopfProcess):
    """``kopf run`` of the pool handlers for one namespace, logging to a file."""

    def __init__(self, world: PoolWorld, log_path: Path) -> None:
        super().__init__("spatialjoin_operator.pool_handlers", world.namespace,
                         {**world.env, "SPATIALJOIN_OPERATOR_POOL_INTERVAL_S": str(INTERVAL_S),
                          "SPATIALJOIN_OPERATOR_LATENCY_WINDOW_S": "120"},
                         log_path)

    def audit(self) -> list[dict[str, Any]]:
        """The JSON audit lines (one per escalation) from the operator's output."""
        lines = []
        for line in self.log().splitlines():
            if line.startswith("{") and '"channel": "audit"' in line:
                lines.append(json.loads(line))
        return lines

    def escalation_counts(self) -> dict[tuple[str, str], float]:
        counts: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == "spatialjoin_operator_escalations_total":
                    counts[(sample.labels["severity"], sample.labels["action"])] = sample.value
        return counts


@contextmanager
def running_pool_operator(world: PoolWorld) -> Iterator[PoolOperator]:
    operator = PoolOperator(world, world.log_dir / "pool-operator.log")
    try:
        operator.wait_started("pool operator started")
        yield operator
    finally:
        try:
            world.delete_pools()  # while the operator runs: it holds a finalizer (its timer)
        finally:
            operator.stop()


# --- assertions shared by the tests -----------------------------------------------------


def escalations(status: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [e for e in status.get("escalations", []) if e["action"] == action]


def assert_recorded(world: PoolWorld, operator: PoolOperator, entry: dict[str, Any]) -> None:
    """The status entry's incident id is also in an Event, the audit log and the counter."""
    incident = entry["incidentId"]
    severity, action = entry["severity"], entry["action"]
    kind = "Normal" if action == "StepDown" else "Warning"
    event = wait_for(lambda: next((e for e in world.events() if incident in e[2]
                                   and e[2][:200] == entry["message"][:200]), None),
                     timeout=30, interval=0.25, what=f"an Event for incident {incident}")
    assert event[0] == kind and event[1] == f"{severity}{action}", event
    audit = wait_for(lambda: [a for a in operator.audit() if a["incident_id"] == incident
                              and a["action"] == action and a["time"] == entry["time"]],
                     timeout=10, interval=0.25, what=f"an audit line for {incident}")
    assert len(audit) == 1, audit
    assert audit[0]["severity"] == severity and audit[0]["workerpool"] == world.name
    for key in ("trigger", "observed", "threshold", "escalation_path"):
        assert key in audit[0], audit[0]
    assert operator.escalation_counts().get((severity, action), 0) >= 1


def assert_spec_untouched(world: PoolWorld, created: dict[str, Any]) -> None:
    now = world.pool()
    assert now["metadata"]["generation"] == created["metadata"]["generation"]
    assert now["spec"] == created["spec"]
