"""Shared fixtures: one real local stack per session, isolated resources per test.

The stack is reused when one is already up (``make test`` starts it first,
or a developer ran ``spatialjoin stack up``); otherwise the session starts
it and stops it at the end. Unit tests never touch it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from spatialjoin_devstack import stack


@pytest.fixture(scope="session")
def stack_env() -> Iterator[dict[str, str]]:
    """Connection settings of a healthy stack, exported into os.environ for the session."""
    started_here = False
    if not all(row.healthy for row in stack.status()):
        stack.up()
        started_here = True
    settings = stack.env()
    previous = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    # The kubernetes client reads $KUBECONFIG once, when first imported (which
    # collection already did); kopf's login goes through it, so point it here.
    from kubernetes.config import kube_config

    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = settings["KUBECONFIG"]
    try:
        yield settings
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if started_here:
            stack.down()


@pytest.fixture(scope="session")
def stack_settings(stack_env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each component's raw settings (ports, credentials, control endpoints)."""
    return stack.context().settings


def unique(prefix: str) -> str:
    """A short unique name safe for namespaces, schemas, topics and prefixes."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- Kubernetes -------------------------------------------------------------

@pytest.fixture(scope="session")
def kube_api(stack_env: dict[str, str]) -> Iterator[Any]:
    """A kubernetes ApiClient authenticated as the stack's admin."""
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=stack_env["KUBECONFIG"])
    try:
        yield api_client
    finally:
        api_client.close()
    _ = client


@pytest.fixture
def namespace(kube_api: Any) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    name = unique("t")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


# --- PostGIS ----------------------------------------------------------------

@pytest.fixture(scope="session")
def database_url(stack_env: dict[str, str]) -> str:
    return stack_env["SPATIALJOIN_DATABASE_URL"]


@pytest.fixture
def db_schema(database_url: str) -> Iterator[tuple[str, str]]:
    """(schema, url) where the url's search_path puts a fresh schema first."""
    import psycopg
    from psycopg import sql

    schema = unique("t").replace("-", "_")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    separator = "&" if "?" in database_url else "?"
    url = f"{database_url}{separator}options=-csearch_path%3D{schema},public"
    try:
        yield schema, url
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


# --- Kafka ------------------------------------------------------------------

@pytest.fixture(scope="session")
def kafka_settings(stack_settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return stack_settings["kafka"]


@pytest.fixture
def topic_names(kafka_settings: dict[str, Any]) -> dict[str, str]:
    """Fresh task and dead-letter topics (12 partitions) created on the broker."""
    from spatialjoin_devstack.kafka_control import KafkaControl

    control = KafkaControl(kafka_settings["control"])
    names = {"tasks": unique("tasks"), "dlq": unique("tasks-dlq")}
    for name in names.values():
        control.create_topic(name, 12)
    return names


# --- S3 ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def s3_filesystem(stack_settings: dict[str, dict[str, Any]]) -> Any:
    from pyarrow import fs

    s3 = stack_settings["s3"]
    return fs.S3FileSystem(access_key=s3["access_key"], secret_key=s3["secret_key"],
                           endpoint_override=s3["endpoint"], scheme="http",
                           region="us-east-1")


@pytest.fixture
def s3_prefix(stack_settings: dict[str, dict[str, Any]], s3_filesystem: Any) -> Iterator[str]:
    """A fresh ``bucket/prefix`` path, removed afterwards."""
    path = f"{stack_settings['s3']['bucket']}/{unique('t')}"
    try:
        yield path
    finally:
        s3_filesystem.delete_dir_contents(path, missing_dir_ok=True)
