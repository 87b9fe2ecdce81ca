"""Worker settings, read from the environment the WorkerPool's Deployment sets."""

from __future__ import annotations

import socket
from enum import StrEnum

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from spatialjoin_contracts.models import ContractVersion
from spatialjoin_contracts.models.pool import Engine


class InvalidGeometryPolicy(StrEnum):
    """What a worker does with an invalid source polygon."""

    MAKE_VALID = "make-valid"
    """Join ST_MakeValid(geom) instead, count it and flag the rows (domain_geometry_valid)."""
    SKIP = "skip"
    """Leave the polygon out of the join, count it and log a sample of ids."""


class WorkerSettings(BaseSettings):
    """Every knob of ``spatialjoin worker``; names match ``spatialjoin stack env``."""

    model_config = SettingsConfigDict(env_prefix="SPATIALJOIN_", extra="ignore")

    kafka_bootstrap: str
    """Comma-separated host:port of the brokers."""
    topic: str = "tasks"
    dead_letter_topic: str = "tasks.dlq"
    consumer_group: str = "spatialjoin-workers"
    database_url: SecretStr
    s3_endpoint: str | None = None
    s3_region: str = Field(default="us-east-1",
                           validation_alias=AliasChoices("SPATIALJOIN_S3_REGION", "AWS_REGION"))
    aws_access_key_id: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ACCESS_KEY_ID"))
    aws_secret_access_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY"))
    concurrency: int = Field(default=8, ge=1, le=256)
    max_heap_mb: int = Field(default=4096, ge=1)
    engine: Engine = Engine.POSTGIS
    active_contract: ContractVersion | None = None
    """The pool's effective contract (status.activeContract); v2.0 after a P1 rollback."""
    max_retries: int = Field(default=3, ge=0, le=20)
    retry_initial_delay_s: float = Field(default=0.5, ge=0)
    retry_max_delay_s: float = Field(default=10.0, ge=0)
    statement_timeout_s: float = Field(default=300.0, gt=0)
    batch_rows: int = Field(default=50_000, ge=1)
    row_group_rows: int = Field(default=250_000, ge=1)
    invalid_geometry_policy: InvalidGeometryPolicy = InvalidGeometryPolicy.MAKE_VALID
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    metrics_addr: str = "127.0.0.1"
    worker_id: str = Field(default_factory=socket.gethostname)
    commit_interval_s: float = Field(default=1.0, ge=0)
    log_level: str = "INFO"
