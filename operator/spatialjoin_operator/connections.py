"""Clients the operator shares between handlers: per-pool database pools and producers.

Every WorkerPool names its own broker and (through a Secret) its own
database, so clients are cached per address, not made once per process.
"""

from __future__ import annotations

import base64
import threading
from typing import Any

from confluent_kafka import Producer
from kubernetes import client, config
from psycopg_pool import ConnectionPool

from spatialjoin_contracts.models.pool import BrokerSpec, SecretKeySelector


class SecretMissing(LookupError):
    """A referenced Secret or key does not exist (yet): wait, do not fail."""


class Connections:
    """Thread-safe caches of producers and connection pools."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._producers: dict[tuple[str, str, int, int, bool], Producer] = {}
        self._pools: dict[str, ConnectionPool] = {}

    def producer(self, broker: BrokerSpec) -> Producer:
        """An idempotent producer configured from the pool's broker spec."""
        key = (broker.bootstrap_servers, broker.acks.value, broker.linger_ms,
               broker.batch_size_bytes, broker.idempotent_producer)
        with self._lock:
            if key not in self._producers:
                self._producers[key] = Producer({
                    "bootstrap.servers": broker.bootstrap_servers,
                    "acks": broker.acks.value, "linger.ms": broker.linger_ms,
                    "batch.size": broker.batch_size_bytes,
                    "enable.idempotence": broker.idempotent_producer,
                    "client.id": "spatialjoin-operator"})
            return self._producers[key]

    def database(self, url: str) -> ConnectionPool:
        with self._lock:
            if url not in self._pools:
                self._pools[url] = ConnectionPool(url, min_size=0, max_size=4, open=True,
                                                  kwargs={"autocommit": True,
                                                          "application_name":
                                                              "spatialjoin-operator"})
            return self._pools[url]

    def close(self) -> None:
        with self._lock:
            for producer in self._producers.values():
                producer.flush(10)
            for pool in self._pools.values():
                pool.close()
            self._producers.clear()
            self._pools.clear()


def read_secret_key(core: client.CoreV1Api, namespace: str, selector: SecretKeySelector) -> str:
    """The decoded value of a Secret key; SecretMissing when absent."""
    try:
        secret = core.read_namespaced_secret(selector.name, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            raise SecretMissing(f"Secret {namespace}/{selector.name} not found") from exc
        raise
    data: dict[str, Any] = secret.data or {}
    if selector.key not in data:
        raise SecretMissing(f"Secret {namespace}/{selector.name} has no key {selector.key!r}")
    return base64.b64decode(data[selector.key]).decode()


CONNECTIONS = Connections()


_API_CLIENT: client.ApiClient | None = None
_API_LOCK = threading.Lock()


def kube_api_client() -> client.ApiClient:
    """One ApiClient per process: in-cluster config, else the kubeconfig (local runs)."""
    global _API_CLIENT
    with _API_LOCK:
        if _API_CLIENT is None:
            configuration = client.Configuration()
            try:
                config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration)
            except config.ConfigException:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration)
            _API_CLIENT = client.ApiClient(configuration)
        return _API_CLIENT
