"""kopf handlers for WorkerPools: a timer that observes and reconciles, a spec watcher, cleanup.

Each handler is one call into :mod:`pool_reconcile`, which reads, observes,
decides (pool_policy), acts (pool_act) and writes status once.
"""

from __future__ import annotations

from typing import Any

import kopf

from spatialjoin_contracts import api

from . import kopf_setup  # noqa: F401  (shared startup settings)
from .pool_reconcile import forget, reconcile
from .settings import load

SETTINGS = load()
OBSERVE_INTERVAL_S = SETTINGS.pool_interval_s
"""How often every pool is observed (SPATIALJOIN_OPERATOR_POOL_INTERVAL_S, read at import)."""


@kopf.timer(api.GROUP, api.VERSION, api.POOL_PLURAL, interval=OBSERVE_INTERVAL_S, sharp=True)
def observe_pool(namespace: str | None, name: str, **_: Any) -> None:
    """Lag, latency and health into status; escalate and scale as the policy decides."""
    reconcile(namespace or "", name, SETTINGS)


@kopf.on.update(api.GROUP, api.VERSION, api.POOL_PLURAL, field="spec")
def roll_pool(namespace: str | None, name: str, **_: Any) -> None:
    """A spec change rolls the workers at once instead of at the next observation."""
    reconcile(namespace or "", name, SETTINGS)


@kopf.on.delete(api.GROUP, api.VERSION, api.POOL_PLURAL, optional=True)
def forget_deleted_pool(namespace: str | None, name: str, **_: Any) -> None:
    """Children go with the owner references; the operator drops its metrics series."""
    forget(namespace or "", name)
