"""A pool being restored runs no workers and takes no escalation action."""

from __future__ import annotations

import pytest

from spatialjoin_operator.conditions import get_condition
from spatialjoin_operator.pool_policy import History, decide
from spatialjoin_operator.pool_reconcile import paused_for_restore

from .pool_timeline import at, effective, lag, pool

pytestmark = pytest.mark.unit


def test_restore_pause_scales_to_zero_and_drops_actions() -> None:
    spec = pool(escalation={"cooldownSeconds": 60, "p2": {"consumerLag": 100}},
                replicas={"min": 1, "max": 6})
    history = History(effective=effective(replicas=2), conditions=[], escalations=[],
                      annotations={"spatialjoin.io/paused-for-restore": "r1 at t by h"})
    decision = decide(spec, lag(5000, partitions=6), history, at(0))
    assert decision.actions, "the lag alone would rebalance"
    paused, deployed = paused_for_restore(decision, "r1 at t by h", 3, at(0))
    assert paused.actions == ()
    assert deployed.replicas == 0
    assert paused.effective == decision.effective  # status keeps what the pool should run
    condition = get_condition(paused.conditions, "ScalingPaused")
    assert condition is not None and condition["reason"] == "PausedForRestore"
    assert condition["status"] == "True" and "r1 at t by h" in condition["message"]
