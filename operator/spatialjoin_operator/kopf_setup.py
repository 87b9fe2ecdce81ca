"""Operator-wide kopf settings and shared clients; every handler module imports this."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from prometheus_client import start_http_server

from .connections import CONNECTIONS
from .settings import load


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger | logging.LoggerAdapter[Any],
              **_: Any) -> None:
    """Progress and diff-base in annotations: the CRDs' status schemas are structural,
    so the apiserver would prune kopf's own status fields."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="spatialjoin.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="spatialjoin.io")
    settings.persistence.finalizer = "spatialjoin.io/finalizer"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    # A job's timer deletes its own job when its TTL runs out, so the timer is
    # still running when the deletion arrives; by default kopf re-checks it only
    # after 60 s, holding the finalizer that long.
    settings.background.instant_exit_timeout = 5.0
    settings.background.cancellation_polling = 5.0
    settings.networking.request_timeout = 30
    operator_settings = load()
    if operator_settings.metrics_port:
        start_http_server(operator_settings.metrics_port, addr=operator_settings.metrics_addr)
        logger.info("metrics on %s:%s", operator_settings.metrics_addr,
                    operator_settings.metrics_port)


@kopf.on.cleanup()
def close_clients(**_: Any) -> None:
    CONNECTIONS.close()
