"""A worker's world: migrated schema, a small dataset, fresh topics, a bucket prefix."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from spatialjoin_contracts import samples
from spatialjoin_contracts.models.job import SpatialJoinJobSpec
from spatialjoin_contracts.models.pool import WorkerPoolSpec
from spatialjoin_contracts.task_message import JobIdentity, TaskMessage
from spatialjoin_contracts.task_plan import plan_tasks
from tests.support.pool_world import load_tiny_dataset


@dataclass
class WorkerWorld:
    schema: str
    database_url: str
    bootstrap: str
    topic: str
    dlq: str
    group: str
    bucket_path: str
    s3: dict[str, Any]
    pool: WorkerPoolSpec
    log_dir: Path

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "SPATIALJOIN_KAFKA_BOOTSTRAP": self.bootstrap, "SPATIALJOIN_TOPIC": self.topic,
            "SPATIALJOIN_DEAD_LETTER_TOPIC": self.dlq, "SPATIALJOIN_CONSUMER_GROUP": self.group,
            "SPATIALJOIN_DATABASE_URL": self.database_url,
            "SPATIALJOIN_S3_ENDPOINT": self.s3["endpoint"],
            "AWS_ACCESS_KEY_ID": self.s3["access_key"],
            "AWS_SECRET_ACCESS_KEY": self.s3["secret_key"],
            "SPATIALJOIN_RETRY_INITIAL_DELAY_S": "0.2", "SPATIALJOIN_COMMIT_INTERVAL_S": "0.2",
        }
        env.update(overrides)
        return env

    def job(self, **spec: Any) -> SpatialJoinJobSpec:
        raw = samples.job_spec(output={"uriPrefix": f"s3://{self.bucket_path}"})
        raw.update(spec)
        return SpatialJoinJobSpec.model_validate(raw)

    def tasks(self, job: SpatialJoinJobSpec, uid: str | None = None) -> list[TaskMessage]:
        identity = JobIdentity(namespace="tests", name="job", uid=uid or str(uuid.uuid4()))
        return plan_tasks(job, self.pool, identity, enqueued_at=datetime.now(UTC))

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.database_url, autocommit=True)


@pytest.fixture
def world(db_schema: tuple[str, str], topic_names: dict[str, str], s3_prefix: str,
          kafka_settings: dict[str, Any], stack_settings: dict[str, Any],
          tmp_path: Path) -> WorkerWorld:
    schema, url = db_schema
    load_tiny_dataset(url, invalid_fraction=0.01)
    pool = WorkerPoolSpec.model_validate(samples.pool_spec())
    return WorkerWorld(schema=schema, database_url=url, bootstrap=kafka_settings["bootstrap"],
                       topic=topic_names["tasks"], dlq=topic_names["dlq"],
                       group=f"g-{uuid.uuid4().hex[:8]}", bucket_path=s3_prefix,
                       s3=stack_settings["s3"], pool=pool, log_dir=tmp_path / "logs")
