"""Operator settings from the environment (SPATIALJOIN_OPERATOR_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """Knobs of ``spatialjoin operator``; the chart sets them, tests override them."""

    model_config = SettingsConfigDict(env_prefix="SPATIALJOIN_OPERATOR_", extra="ignore")

    job_interval_s: float = Field(default=3.0, gt=0)
    """How often a job's timer observes its partitions."""
    pool_interval_s: float = Field(default=10.0, gt=0)
    """How often a pool's timer observes lag, latency and health."""
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    metrics_addr: str = "127.0.0.1"
    worker_image: str | None = None
    """Override of WorkerPool.spec.image (local runs)."""
    latency_window_s: float = Field(default=300.0, gt=0)
    """Sliding window of finished tasks for p50/p95 and failure counts."""
    log_level: str = "INFO"


def load() -> OperatorSettings:
    return OperatorSettings()
