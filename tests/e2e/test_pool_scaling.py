"""A WorkerPool on the real stack: children, lag-driven scaling with cooldown, a blind broker."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from spatialjoin_devstack.kafka_control import ApiKey, ErrorCode
from spatialjoin_devstack.waiting import DeadlineExceeded, wait_for
from spatialjoin_operator import children
from spatialjoin_operator.conditions import get_condition

from . import pool_support
from .pool_support import (
    INTERVAL_S,
    PoolWorld,
    assert_recorded,
    assert_spec_untouched,
    escalations,
    running_pool_operator,
)

pool_crds = pool_support.pool_crds  # fixtures, from the shared module
pool_world = pool_support.pool_world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

COOLDOWN_S = 16
THRESHOLD = 5
SLOW_TASK_S = 4


def lagging_pool(world: PoolWorld) -> dict[str, Any]:
    """One worker, slow tasks, a lag threshold of 5 and a short cooldown.

    The worker's concurrency (16) is above the backlog (12), so it never
    pauses its partitions: a worker that is paused when a rebalance starts
    keeps them paused afterwards (librdkafka keeps the pause flag across a
    rebalance and the worker resumes only its then-empty assignment), which
    is a worker issue these tests should not depend on.
    """
    world.slow_view("slow_polygons", SLOW_TASK_S)
    return world.create_pool(replicas={"min": 1, "max": 4}, concurrency=16,
                             escalation={"cooldownSeconds": COOLDOWN_S,
                                         "p2": {"consumerLag": THRESHOLD},
                                         "p3": {"latencySeconds": 600, "concurrency": 16}})


def publish_backlog(world: PoolWorld, traces: int = 3) -> None:
    """``traces`` slow tasks on each of 4 partitions: lag 12 until they are committed."""
    job = world.job_spec(partitions=["p00", "p01", "p02", "p03"],
                         source={"polygons": {"table": "slow_polygons"},
                                 "points": {"table": "domain_b_points"}})
    for index in range(traces):
        world.publish_job(job, trace_id=f"backlog-{index}")


def condition(status: dict[str, Any], type_: str) -> str | None:
    found = get_condition(status.get("conditions"), type_)
    return None if found is None else str(found["status"])


def test_the_pool_owns_hardened_children_and_rolls_on_spec_change(pool_world: PoolWorld) -> None:
    world = pool_world
    with running_pool_operator(world):
        created = world.create_pool(concurrency=3)
        ready = world.wait_status(lambda s: s.get("readyReplicas") == 1 and s,
                                  timeout=90, what="one ready worker")
        assert ready["selector"] == children.selector_string(world.name)
        assert ready["effectiveConcurrency"] == 3 and ready["activeContract"] == "v2.1"
        assert condition(ready, "Available") == "True"
        names = children.child_names(world.name)
        core = client.CoreV1Api(world.kube_api)
        policy_objects = client.CustomObjectsApi(world.kube_api)
        config_map = core.read_namespaced_config_map(names.config_map, world.namespace)
        service = core.read_namespaced_service(names.service, world.namespace)
        pdb = policy_objects.list_namespaced_custom_object(
            "policy", "v1beta1", world.namespace, "poddisruptionbudgets")["items"]
        deployment = world.deployment()
        assert deployment is not None
        for obj in (config_map.to_dict(), service.to_dict(), pdb[0], deployment):
            metadata = obj["metadata"]
            refs = metadata.get("owner_references") or metadata.get("ownerReferences")
            assert refs and refs[0]["uid"] == created["metadata"]["uid"], metadata
        assert "partition-map.json" in (config_map.data or {})
        first_template = deployment["metadata"]["generation"]

        # a spec edit rolls the workers: new pods with the new env
        world.custom.patch_namespaced_custom_object(
            "spatialjoin.io", "v1alpha1", world.namespace, "workerpools", world.name,
            {"spec": {"maxHeapMb": 2048}})
        wait_for(lambda: world.ready_pods(SPATIALJOIN_MAX_HEAP_MB="2048"), timeout=90,
                 interval=0.5, what="a worker rolled with the new maxHeapMb")
        rolled = world.deployment()
        assert rolled is not None and rolled["metadata"]["generation"] > first_template
        # nothing changed in the operator's eyes afterwards: no more generations
        generation = rolled["metadata"]["generation"]
        wait_for(lambda: world.status().get("observedGeneration") ==
                 world.pool()["metadata"]["generation"], timeout=30, interval=0.25,
                 what="status observed the new generation")
        again = world.deployment()
        assert again is not None and again["metadata"]["generation"] == generation

        # deleting the pool deletes the children (owner references, garbage collector)
        world.custom.delete_namespaced_custom_object(
            "spatialjoin.io", "v1alpha1", world.namespace, "workerpools", world.name)
        wait_for(lambda: world.deployment() is None and world.pods() == 0, timeout=60,
                 interval=0.5, what="the Deployment and its pods gone with the pool")
        assert not core.list_namespaced_config_map(
            world.namespace, label_selector=f"{children.POOL_LABEL}={world.name}").items


def test_lag_over_the_threshold_scales_up_and_back_down_after_the_cooldown(
        pool_world: PoolWorld) -> None:
    world = pool_world
    with running_pool_operator(world) as operator:
        created = lagging_pool(world)
        world.wait_status(lambda s: s.get("readyReplicas") == 1, timeout=90,
                          what="one ready worker")
        publish_backlog(world)
        published = time.monotonic()
        status = world.wait_status(lambda s: escalations(s, "Rebalance") and s, timeout=60,
                                   what="a P2 rebalance")
        raised = time.monotonic() - published
        (rebalance,) = escalations(status, "Rebalance")
        assert rebalance["severity"] == "P2" and rebalance["trigger"] == "ConsumerLag"
        assert world.replicas() == 4, "four lagging partitions, spec max 4"
        assert raised <= 3 * INTERVAL_S + 5, f"scaled {raised:.1f} s after the backlog"
        assert condition(status, "LagAboveThreshold") == "True" and status["severity"] == "P2"
        assert_recorded(world, operator, rebalance)
        wait_for(lambda: len(world.ready_pods()) == 4, timeout=120, interval=0.5,
                 what="four ready workers")

        cleared = world.wait_status(
            lambda s: condition(s, "LagAboveThreshold") == "False" and s,
            timeout=180, what="the lag cleared")
        clear_since = get_condition(cleared["conditions"], "LagAboveThreshold")
        assert clear_since is not None
        stepped = world.wait_status(lambda s: len(escalations(s, "StepDown")) >= 2 and s,
                                    timeout=4 * COOLDOWN_S + 30, what="two steps down")
        steps = escalations(stepped, "StepDown")
        assert [s["severity"] for s in steps] == ["P2", "P2"]
        assert all(s["incidentId"] == rebalance["incidentId"] for s in steps)
        assert steps[0]["time"] >= _plus(clear_since["lastTransitionTime"], COOLDOWN_S)
        assert steps[1]["time"] >= _plus(steps[0]["time"], COOLDOWN_S)
        assert "replicas 4 -> 2" in steps[0]["message"]
        assert "replicas 2 -> 1" in steps[1]["message"]
        assert world.replicas() == 1
        for step in steps:
            assert_recorded(world, operator, step)
        world.wait_status(lambda s: s["lag"]["total"] == 0 and s.get("replicas") == 1,
                          timeout=60, what="one worker left and no lag")
        with world.connect() as conn:
            done = conn.execute("SELECT count(*) FROM spatial_join_results").fetchone()
        assert done == (12,), "every backlog task materialized once"
        assert_spec_untouched(world, created)


def test_a_broker_metadata_failure_is_metrics_unavailable_and_never_a_scale_down(
        pool_world: PoolWorld) -> None:
    world = pool_world
    with running_pool_operator(world):
        created = lagging_pool(world)
        world.wait_status(lambda s: s.get("readyReplicas") == 1, timeout=90,
                          what="one ready worker")
        publish_backlog(world)
        world.wait_status(lambda s: escalations(s, "Rebalance"), timeout=60, what="scaled up")
        held = world.wait_status(lambda s: condition(s, "LagAboveThreshold") == "False" and s,
                                 timeout=180, what="the lag cleared")
        replicas = world.replicas()
        assert replicas is not None and replicas > 1
        assert not escalations(held, "StepDown"), "the fault must come before the step down"
        world.control.push_request_errors(ApiKey.METADATA,
                                          [ErrorCode.LEADER_NOT_AVAILABLE] * 20000)
        try:
            blind = world.wait_status(
                lambda s: condition(s, "MetricsUnavailable") == "True" and s,
                timeout=30, what="MetricsUnavailable")
            unavailable = get_condition(blind["conditions"], "MetricsUnavailable")
            assert unavailable is not None and "consumer lag" in unavailable["message"]
            lag_before = world.status()["lag"]
            # a step down falls due (clear for a cooldown) while blind: it must not happen
            with pytest.raises(DeadlineExceeded):
                wait_for(lambda: world.replicas() != replicas
                         or escalations(world.status(), "StepDown"),
                         timeout=COOLDOWN_S + 4 * INTERVAL_S, interval=0.5,
                         what="a step down while the lag cannot be read")
            during = world.status()
            assert condition(during, "MetricsUnavailable") == "True"
            assert during["lag"] == lag_before, "the last lag is held, not replaced by zero"
        finally:
            world.control.clear_request_errors(ApiKey.METADATA)
        world.wait_status(lambda s: condition(s, "MetricsUnavailable") == "False", timeout=30,
                          what="metrics read again")
        world.wait_status(lambda s: escalations(s, "StepDown"), timeout=COOLDOWN_S + 30,
                          what="the held step down, once the lag can be read")
        assert_spec_untouched(world, created)


def _plus(timestamp: str, seconds: int) -> str:
    from datetime import datetime, timedelta

    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00")) + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
