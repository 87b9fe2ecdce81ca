"""What every test that runs a WorkerPool needs first: its data and its Secrets."""

from __future__ import annotations

from typing import Any

import psycopg
from kubernetes import client

from spatialjoin_contracts.dataset_load import load_dataset
from spatialjoin_contracts.ddl import migrate
from spatialjoin_contracts.partition_map import grid_partition_map


def load_tiny_dataset(url: str, *, invalid_fraction: float) -> None:
    """The bookkeeping tables and the seeded tiny dataset, in the url's first schema."""
    with psycopg.connect(url) as conn:
        with conn.transaction(), conn.cursor() as cur:
            migrate(cur)
        load_dataset(conn, grid_partition_map(), scale="tiny", seed=7,
                     invalid_fraction=invalid_fraction)


def create_pool_secrets(kube_api: Any, namespace: str, *, db_secret: str, s3_secret: str,
                        database_url: str, s3: dict[str, Any]) -> None:
    """The database and storage Secrets a WorkerPool references."""
    core = client.CoreV1Api(kube_api)
    for name, data in ((db_secret, {"url": database_url}),
                       (s3_secret, {"AWS_ACCESS_KEY_ID": s3["access_key"],
                                    "AWS_SECRET_ACCESS_KEY": s3["secret_key"]})):
        core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name=name), string_data=data))
