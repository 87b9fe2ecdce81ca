"""The whole product on the real stack: CRDs installed, a pool's world, the job operator.

The operator runs as its own process (``python -m kopf run -m
spatialjoin_operator.job_handlers``), so a restart is a real one. Only the job
handlers run: no pool reconciler makes a Deployment, so the tests start the
workers themselves, with the environment the pool's Deployment would give
them, exactly when they want them.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from spatialjoin_contracts import api, samples
from spatialjoin_devstack.waiting import wait_for
from tests.support.operator import KopfProcess, apply_crds
from tests.support.pool_world import create_pool_secrets, load_tiny_dataset

REPO = Path(__file__).resolve().parents[2]
DB_SECRET = "spatialjoin-db"
S3_SECRET = "spatialjoin-s3"
POOL = "pool-a"
JOB_INTERVAL_S = "1"


# --- CRDs -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def crds(kube_api: Any) -> None:
    """The committed crds/*.yaml applied (create or replace), established and served."""
    apply_crds(kube_api, (yaml.safe_load(path.read_text())
                          for path in sorted((REPO / "crds").glob("*.yaml"))),
               wait_established=True)


# --- one test's world -------------------------------------------------------------------


@dataclass
class JobWorld:
    """A namespace with the pool's Secrets, a loaded schema, fresh topics and a bucket prefix."""

    namespace: str
    database_url: str
    bootstrap: str
    topic: str
    dlq: str
    group: str
    bucket_path: str
    s3: dict[str, Any]
    kube_api: Any
    env: dict[str, str]
    log_dir: Path

    # kubectl and the API

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        binary = str(Path(self.env["SPATIALJOIN_TOOLS_BIN"]) / "kubectl")
        result = subprocess.run(
            [binary, "--kubeconfig", self.env["KUBECONFIG"], "-n", self.namespace, *args],
            input=stdin, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest))

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.kube_api)

    def pool_manifest(self, name: str = POOL, **spec: Any) -> dict[str, Any]:
        manifest = samples.pool_object(name, self.namespace)
        manifest["spec"].update({
            "broker": {"bootstrapServers": self.bootstrap, "topic": self.topic,
                       "deadLetterTopic": self.dlq, "consumerGroup": self.group},
            "database": {"urlSecretRef": {"name": DB_SECRET, "key": "url"}},
            "storage": {"secretRef": {"name": S3_SECRET}, "endpoint": self.s3["endpoint"]},
        })
        manifest["spec"].update(spec)
        return manifest

    def job_manifest(self, name: str, pool: str = POOL, **spec: Any) -> dict[str, Any]:
        manifest = samples.job_object(name, self.namespace, pool,
                                      output={"uriPrefix": f"s3://{self.bucket_path}"})
        manifest["spec"].update(spec)
        return manifest

    def job(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, self.namespace, api.JOB_PLURAL, name))

    def job_gone(self, name: str) -> bool:
        try:
            self.job(name)
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    def wait_job(self, name: str, probe: Callable[[dict[str, Any]], bool], *, timeout: float,
                 what: str) -> dict[str, Any]:
        """The job once ``probe(status)`` holds."""
        def check() -> dict[str, Any] | None:
            obj = self.job(name)
            return obj if probe(obj.get("status") or {}) else None
        try:
            return wait_for(check, timeout=timeout, interval=0.25, what=f"{name}: {what}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; status: {json.dumps(self.job(name).get('status'))}"
                                 ) from exc

    def events(self, name: str) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the job's Events, oldest first."""
        core = client.CoreV1Api(self.kube_api)
        found = core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}").items
        found.sort(key=lambda e: (e.first_timestamp or e.event_time
                                  or e.metadata.creation_timestamp, e.metadata.name))
        return [(str(e.type), str(e.reason), str(e.message)) for e in found]

    def wait_event(self, name: str, reason: str, timeout: float = 30) -> tuple[str, str, str]:
        return wait_for(lambda: next((e for e in self.events(name) if e[1] == reason), None),
                        timeout=timeout, interval=0.25, what=f"{name}: a {reason} Event")

    # the workers, as the pool's Deployment would run them

    def worker_env(self, **overrides: str) -> dict[str, str]:
        env = {
            "SPATIALJOIN_KAFKA_BOOTSTRAP": self.bootstrap, "SPATIALJOIN_TOPIC": self.topic,
            "SPATIALJOIN_DEAD_LETTER_TOPIC": self.dlq, "SPATIALJOIN_CONSUMER_GROUP": self.group,
            "SPATIALJOIN_DATABASE_URL": self.database_url,
            "SPATIALJOIN_S3_ENDPOINT": self.s3["endpoint"], "SPATIALJOIN_S3_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": self.s3["access_key"],
            "AWS_SECRET_ACCESS_KEY": self.s3["secret_key"],
            "SPATIALJOIN_CONCURRENCY": "2", "SPATIALJOIN_MAX_HEAP_MB": "4096",
            "SPATIALJOIN_RETRY_INITIAL_DELAY_S": "0.2", "SPATIALJOIN_COMMIT_INTERVAL_S": "0.2",
        }
        env.update(overrides)
        return env

    # the database and the topic

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.database_url, autocommit=True)

    def rows(self, trace_id: str) -> dict[str, tuple[str, int]]:
        """partition -> (status, attempt) in spatial_async_jobs."""
        with self.connect() as conn:
            found = conn.execute("SELECT partition_key, status, attempt FROM spatial_async_jobs "
                                 "WHERE trace_id = %s", (trace_id,)).fetchall()
        return {r[0]: (r[1], r[2]) for r in found}

    def results(self, trace_id: str) -> dict[str, tuple[str, str, int, int]]:
        """partition -> (uri, sha256, rows, bytes) in spatial_join_results."""
        with self.connect() as conn:
            found = conn.execute(
                "SELECT partition_key, result_uri, checksum_sha256, rows, bytes "
                "FROM spatial_join_results WHERE trace_id = %s", (trace_id,)).fetchall()
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in found}

    def topic_messages(self) -> int:
        """Records ever written to the task topic: the sum of its high watermarks."""
        reader = Consumer({"bootstrap.servers": self.bootstrap,
                           "group.id": f"watermarks-{uuid.uuid4().hex[:8]}"})
        try:
            return sum(reader.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10,
                                                    cached=False)[1] for p in range(12))
        finally:
            reader.close()


@pytest.fixture
def world(crds: None, namespace: str, db_schema: tuple[str, str], topic_names: dict[str, str],
          s3_prefix: str, kafka_settings: dict[str, Any], stack_settings: dict[str, Any],
          stack_env: dict[str, str], kube_api: Any, tmp_path: Path) -> Iterator[JobWorld]:
    _, url = db_schema
    load_tiny_dataset(url, invalid_fraction=0.01)
    s3 = stack_settings["s3"]
    create_pool_secrets(kube_api, namespace, db_secret=DB_SECRET, s3_secret=S3_SECRET,
                        database_url=url, s3=s3)
    world = JobWorld(namespace=namespace, database_url=url, bootstrap=kafka_settings["bootstrap"],
                     topic=topic_names["tasks"], dlq=topic_names["dlq"],
                     group=f"g-{uuid.uuid4().hex[:8]}", bucket_path=s3_prefix, s3=s3,
                     kube_api=kube_api, env=dict(stack_env), log_dir=tmp_path / "logs")
    yield world
    # The operator has stopped: let the namespace go without it, as an admin would.
    jobs = cast(dict[str, Any], world.custom.list_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.JOB_PLURAL))
    for item in jobs.get("items", []):
        world.custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.JOB_PLURAL, item["metadata"]["name"],
            {"metadata": {"finalizers": None}})


# --- the operator -----------------------------------------------------------------------


class OperatorProcess(KopfProcess):
    """``kopf run`` of the job handlers for one namespace, logging to a file."""

    def __init__(self, world: JobWorld, log_path: Path) -> None:
        super().__init__("spatialjoin_operator.job_handlers", world.namespace,
                         {**world.env, "SPATIALJOIN_OPERATOR_JOB_INTERVAL_S": JOB_INTERVAL_S},
                         log_path)


@contextmanager
def running_operator(world: JobWorld, name: str = "operator") -> Iterator[OperatorProcess]:
    operator = OperatorProcess(world, world.log_dir / f"{name}.log")
    try:
        operator.wait_started("operator started")
        yield operator
    finally:
        operator.stop()
