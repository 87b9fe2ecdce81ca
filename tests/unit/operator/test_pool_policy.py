"""pool_policy: severity, scaling with cooldown and hysteresis, heap check, P1 rollback and clear.

Table-driven over timelines with an injected clock (see pool_timeline).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from spatialjoin_operator.conditions import get_condition
from spatialjoin_operator.pool_policy import (
    CLEAR_P1_ANNOTATION,
    PAUSE_ANNOTATION,
    History,
    Signals,
    band,
    decide,
    heap_check,
    step_down,
)

from .pool_timeline import Timeline, at, effective, lag, pool, quiet

pytestmark = pytest.mark.unit

ESC = {"cooldownSeconds": 60, "p2": {"consumerLag": 100}, "p3": {"latencySeconds": 45}}


def spec(**overrides: Any) -> Any:
    return pool(escalation=ESC, **overrides)


def status_of(decision: Any, type_: str) -> str | None:
    found = get_condition(decision.conditions, type_)
    return None if found is None else str(found["status"])


@pytest.mark.parametrize(("current", "floor", "expected"), [
    (12, 8, 10), (10, 8, 9), (9, 8, 8), (8, 8, 8), (4, 1, 2), (2, 1, 1), (1, 1, 1), (5, 0, 2),
    (3, 5, 5),
])
def test_step_down_goes_half_the_remaining_way(current: int, floor: int, expected: int) -> None:
    assert step_down(current, floor) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), (101, True), (100, None), (81, None), (80, False), (0, False),
])
def test_trigger_band_opens_above_and_clears_below_eighty_percent(
        value: float | None, expected: bool | None) -> None:
    assert band(value, 100) is expected


@pytest.mark.parametrize(("max_heap", "p3", "fits", "carries"), [
    (4096, 12, True, 14), (3584, 12, True, 12), (3583, 12, False, 11), (2048, 12, False, 6),
    (512, 1, False, 0),
])
def test_heap_check_uses_the_per_task_estimate(max_heap: int, p3: int, fits: bool,
                                               carries: int) -> None:
    check = heap_check(pool(maxHeapMb=max_heap, concurrency=1,
                            escalation={"p3": {"concurrency": p3}}))
    assert (check.fits, check.max_concurrency) == (fits, carries)
    assert check.required_mb == 512 + 256 * p3


def test_a_quiet_pool_runs_its_spec_and_reports_no_severity() -> None:
    decision = decide(spec(), quiet(), History(), at(0), generation=3)
    assert decision.actions == ()
    assert decision.severity is None
    assert (decision.effective.replicas, decision.effective.concurrency,
            decision.effective.contract.value) == (1, 8, "v2.1")
    assert status_of(decision, "Escalated") == "False"
    assert status_of(decision, "MetricsUnavailable") == "False"
    assert all(c["observedGeneration"] == 3 for c in decision.conditions)


# --- P3 -------------------------------------------------------------------------------------


def test_p3_raises_concurrency_once_per_cooldown_and_steps_down_after_a_clear_window() -> None:
    line = Timeline(spec())
    slow, fast = replace(quiet(), latency_s=60.0), replace(quiet(), latency_s=5.0)
    line.run([(0, slow), (10, slow), (20, fast), (70, fast), (80, fast), (90, fast),
              (150, fast), (210, fast)])
    assert line.actions() == [(0, "P3", "ScaleConcurrency"), (80, "P3", "StepDown"),
                              (150, "P3", "StepDown"), (210, "P3", "StepDown")]
    concurrency = [d.effective.concurrency for _t, d in line.log]
    assert concurrency == [12, 12, 12, 12, 10, 10, 9, 8]
    assert line.log[0][1].severity is not None and line.log[0][1].severity.value == "P3"
    assert line.log[2][1].severity is None


def test_p3_inside_the_hysteresis_band_keeps_the_trigger() -> None:
    line = Timeline(spec())
    line.run([(0, replace(quiet(), latency_s=50.0)), (100, replace(quiet(), latency_s=40.0)),
              (200, replace(quiet(), latency_s=40.0))])
    assert [a for _t, _s, a in line.actions()] == ["ScaleConcurrency"]
    assert status_of(line.log[-1][1], "LatencyAboveThreshold") == "True"


@pytest.mark.parametrize(("max_heap", "concurrency", "target", "acts"), [
    (4096, 8, 12, True),   # 512 + 12 x 256 = 3584 MiB fits
    (2048, 4, 6, True),    # carries 6: raised to 6, not 12
    (1024, 8, 8, False),   # carries 2: spec.concurrency already more; nothing to raise
])
def test_p3_never_raises_past_what_the_heap_carries(max_heap: int, concurrency: int,
                                                    target: int, acts: bool) -> None:
    decision = decide(spec(maxHeapMb=max_heap, concurrency=concurrency),
                      replace(quiet(), latency_s=99.0), History(), at(0))
    assert decision.effective.concurrency == target
    assert bool(decision.actions) is acts
    assert status_of(decision, "HeapInsufficient") == ("False" if max_heap == 4096 else "True")
    if acts and max_heap < 4096:
        assert "capped by maxHeapMb" in decision.actions[0].detail


# --- P2 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("partitions", "maximum", "expected"), [
    (3, 12, 3),    # toward the number of lagging partitions
    (12, 4, 4),    # never above spec max
    (1, 12, 1),    # one lagging partition: one worker is enough
])
def test_p2_raises_replicas_toward_the_lagging_partitions(partitions: int, maximum: int,
                                                          expected: int) -> None:
    decision = decide(spec(replicas={"min": 1, "max": maximum}), lag(1200, partitions),
                      History(), at(0))
    assert decision.effective.replicas == expected
    assert [a.action.value for a in decision.actions] == (["Rebalance"] if expected > 1 else [])
    assert decision.severity is not None and decision.severity.value == "P2"
    assert decision.plan and len(decision.plan) == expected


def test_p2_never_exceeds_the_partitions_in_the_map() -> None:
    two = pool(escalation=ESC, replicas={"min": 1, "max": 10},
               partitionMap=[{"name": "a", "kafkaPartition": 0,
                              "bbox": {"minLon": 0, "minLat": 0, "maxLon": 1, "maxLat": 1}},
                             {"name": "b", "kafkaPartition": 1,
                              "bbox": {"minLon": 1, "minLat": 0, "maxLon": 2, "maxLat": 1}}])
    signals = Signals(lag_total=500, partition_lag={"a": 250, "b": 250}, latency_s=0.0,
                      materialization_failures=0, schema_deviations=0)
    assert decide(two, signals, History(), at(0)).effective.replicas == 2


def test_p2_scales_down_gradually_after_the_cooldown_and_never_flaps() -> None:
    line = Timeline(spec(replicas={"min": 1, "max": 12}))
    over, under = lag(400, 4), lag(10, 4)
    line.run([(0, over), (10, under), (30, over), (40, under), (60, over), (70, under),
              (80, under), (120, under), (130, under), (140, under), (190, under),
              (200, under)])
    assert line.actions() == [(0, "P2", "Rebalance"), (130, "P2", "StepDown"),
                              (190, "P2", "StepDown")]
    assert line.replicas() == [4, 4, 4, 4, 4, 4, 4, 4, 2, 2, 1, 1]


def test_p2_raises_again_only_after_the_cooldown() -> None:
    line = Timeline(spec(replicas={"min": 1, "max": 12}))
    line.run([(0, lag(400, 2)), (10, lag(1200, 6)), (59, lag(1200, 6)), (60, lag(1200, 6))])
    assert line.replicas() == [2, 2, 2, 6]


def test_a_failed_lag_read_holds_replicas_instead_of_reading_zero() -> None:
    line = Timeline(spec(replicas={"min": 1, "max": 12}))
    unavailable = Signals(lag_total=None, latency_s=1.0, materialization_failures=0,
                          schema_deviations=0, unavailable=("consumer lag: broker: down",))
    line.run([(0, lag(400, 4)), (10, lag(0, 4)), (20, unavailable), (200, unavailable),
              (400, unavailable)])
    assert line.replicas() == [4, 4, 4, 4, 4]
    last = line.log[-1][1]
    assert status_of(last, "MetricsUnavailable") == "True"
    found = get_condition(last.conditions, "MetricsUnavailable")
    assert found is not None and "broker: down" in found["message"]
    line.step(410, lag(0, 4))
    assert line.replicas()[-1] == 2  # clear since t=10, cooldown long over: steps down now


def test_paused_pool_does_not_scale_but_still_reports() -> None:
    paused = History(annotations={PAUSE_ANNOTATION: "true"})
    decision = decide(spec(replicas={"min": 1, "max": 12}), replace(lag(900, 6), latency_s=99),
                      paused, at(0))
    assert decision.actions == ()
    assert (decision.effective.replicas, decision.effective.concurrency) == (1, 8)
    assert decision.severity is not None and decision.severity.value == "P2"
    assert status_of(decision, "ScalingPaused") == "True"
    assert decision.plan


# --- P1 -------------------------------------------------------------------------------------


def drift(count: int = 1, failed_at: float = 0) -> Signals:
    return replace(quiet(), schema_deviations=count, last_failure_at=at(failed_at))


def test_p1_rolls_back_once_validates_and_outranks_lag() -> None:
    line = Timeline(spec(replicas={"min": 1, "max": 12}))
    first = line.step(0, replace(lag(900, 3), schema_deviations=2, last_failure_at=at(0)))
    assert {(a.severity.value, a.action.value, a.trigger.value) for a in first.actions} == {
        ("P1", "RollbackContract", "SchemaDrift"), ("P2", "Rebalance", "ConsumerLag")}
    assert first.effective.contract.value == "v2.0"
    assert first.validate_geometries
    assert first.severity is not None and first.severity.value == "P1"
    assert status_of(first, "Escalated") == "True"
    again = line.step(100, drift(3, 90))
    assert again.actions == () and again.effective.contract.value == "v2.0"


def test_p1_ends_when_failures_stay_away_for_the_stabilization_window() -> None:
    line = Timeline(spec())
    line.run([(0, drift()), (10, quiet()), (69, quiet()), (70, quiet())])
    assert line.actions() == [(0, "P1", "RollbackContract"), (70, "P1", "StepDown")]
    stepped = line.log[-1][1]
    assert stepped.effective.contract.value == "v2.1" and not stepped.validate_geometries
    assert stepped.actions[0].incident_id == "incident-1"
    assert stepped.severity is None


@pytest.mark.parametrize(("annotation", "clears"), [("incident-1", True), ("incident-9", False),
                                                    ("", False)])
def test_p1_is_cleared_by_the_platform_annotation_naming_the_incident(annotation: str,
                                                                      clears: bool) -> None:
    line = Timeline(spec())
    line.step(0, drift(1, 0))
    decision = line.step(5, drift(1, 0), annotations={CLEAR_P1_ANNOTATION: annotation})
    assert decision.effective.contract.value == ("v2.1" if clears else "v2.0")
    if clears:
        assert decision.actions[0].action.value == "StepDown"
        assert "cleared by annotation" in decision.actions[0].detail
        # the failures seen before the clear do not reopen it, even after the cooldown
        later = line.step(200, drift(1, 0))
        assert later.actions == () and later.effective.contract.value == "v2.1"
        reopened = line.step(210, drift(2, 205))
        assert [a.action.value for a in reopened.actions] == ["RollbackContract"]
        assert reopened.actions[0].incident_id is None  # a new incident


def test_p1_triggers_follow_the_spec_switches() -> None:
    off = pool(escalation={**ESC, "p1": {"onSchemaDrift": False}})
    assert decide(off, drift(), History(), at(0)).actions == ()
    failure = replace(quiet(), materialization_failures=1, last_failure_at=at(0))
    acted = decide(off, failure, History(), at(0))
    assert [a.trigger.value for a in acted.actions] == ["MaterializationFailure"]


def test_a_rollback_in_force_without_a_record_is_still_an_open_incident() -> None:
    history = History(effective=effective(contract="v2.0"))
    decision = decide(spec(), quiet(), history, at(0))
    assert decision.effective.contract.value == "v2.0" and decision.validate_geometries


def test_spec_edits_bound_the_values_in_force() -> None:
    history = History(effective=effective(replicas=9, concurrency=12))
    decision = decide(spec(replicas={"min": 2, "max": 4}, maxHeapMb=2048, concurrency=4),
                      quiet(), history, at(0))
    assert (decision.effective.replicas, decision.effective.concurrency) == (4, 6)
    raised = decide(spec(concurrency=10), quiet(), History(effective=effective(concurrency=8)),
                    at(0))
    assert raised.effective.concurrency == 10 and raised.actions == ()


def test_severity_is_the_highest_that_holds() -> None:
    both = replace(lag(900, 3), latency_s=99.0)
    decision = decide(spec(), both, History(), at(0))
    assert decision.severity is not None and decision.severity.value == "P2"
    assert {a.severity.value for a in decision.actions} == {"P2", "P3"}


@pytest.mark.parametrize(("max_heap", "concurrency", "says"), [
    (4096, 8, "escalation.p3.concurrency 12 needs 3584 MiB"),
    (2048, 4, "P3 stops at 6 instead of risking OOM"),
    (1024, 8, "spec.concurrency 8 already needs 2560 MiB: P3 will not raise it"),
])
def test_heap_condition_says_what_the_heap_carries(max_heap: int, concurrency: int,
                                                   says: str) -> None:
    decision = decide(spec(maxHeapMb=max_heap, concurrency=concurrency), quiet(), History(),
                      at(0))
    found = get_condition(decision.conditions, "HeapInsufficient")
    assert found is not None and says in found["message"], found
