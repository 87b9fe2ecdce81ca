"""Small valid objects of every contract, for tests, docs and the integration tests' fixtures.

Plain camelCase dicts, as they would appear in a manifest; parse them with the models.
"""

from __future__ import annotations

from typing import Any

from . import api
from .partition_map import grid_partition_map, partition_map_document


def pool_spec(**overrides: Any) -> dict[str, Any]:
    """A minimal valid WorkerPool spec: server defaults fill in everything else."""
    spec: dict[str, Any] = {
        "image": "spatialjoin-worker:dev",
        "broker": {"bootstrapServers": "127.0.0.1:9092"},
        "database": {"urlSecretRef": {"name": "spatialjoin-db"}},
        "storage": {"secretRef": {"name": "spatialjoin-s3"}},
        **partition_map_document(grid_partition_map()),
    }
    spec.update(overrides)
    return spec


def job_spec(pool: str = "pool-a", **overrides: Any) -> dict[str, Any]:
    """A minimal valid SpatialJoinJob spec over the sample dataset tables."""
    spec: dict[str, Any] = {
        "workerPoolRef": {"name": pool},
        "source": {
            "polygons": {"table": "domain_a_polygons"},
            "points": {"table": "domain_b_points"},
        },
        "output": {"uriPrefix": "s3://spatialjoin-results/jobs"},
    }
    spec.update(overrides)
    return spec


def pool_object(name: str = "pool-a", namespace: str = "default", **spec: Any) -> dict[str, Any]:
    """A WorkerPool manifest."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.POOL_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": pool_spec(**spec),
    }


def job_object(
    name: str = "job-a", namespace: str = "default", pool: str = "pool-a", **spec: Any
) -> dict[str, Any]:
    """A SpatialJoinJob manifest."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.JOB_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": job_spec(pool, **spec),
    }
