"""The job lifecycle's pure decisions, table-driven, with an injected clock."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from spatialjoin_contracts import samples
from spatialjoin_contracts.ddl import TaskStatus
from spatialjoin_contracts.models import Severity, SpatialJoinJobSpec
from spatialjoin_contracts.models.job import JobPhase, RetrySpec, SlaState
from spatialjoin_contracts.validation import FieldError
from spatialjoin_operator import job_policy as policy
from spatialjoin_operator.job_facts import (
    Blocked,
    Blocker,
    JobFacts,
    Observation,
    PartitionRow,
    ResultRow,
)
from spatialjoin_operator.job_policy import RepublishReason

pytestmark = pytest.mark.unit

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
UID = "uid-1"
NAMES = ("p00", "p01", "p02")
SHA = "a" * 64


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(**overrides: Any) -> SpatialJoinJobSpec:
    return SpatialJoinJobSpec.model_validate(samples.job_spec(**overrides))


def row(name: str, status: TaskStatus = TaskStatus.QUEUED, attempt: int = 1, **kw: Any
        ) -> PartitionRow:
    return PartitionRow(partition=name, status=status, attempt=attempt,
                        job_id=kw.pop("job_id", UID), queued_at=kw.pop("queued_at", T0), **kw)


def done(name: str, rows: int = 10) -> tuple[PartitionRow, ResultRow]:
    return (row(name, TaskStatus.DONE, rows=rows, bytes=100, started_at=at(1), finished_at=at(2),
                worker="w0"),
            ResultRow(name, f"s3://spatialjoin-results/jobs/t/{name}.parquet", SHA, rows, 100,
                      "v2.1"))


def observation(*rows: PartitionRow, results: tuple[ResultRow, ...] = ()) -> Observation:
    return Observation(rows={r.partition: r for r in rows},
                       results={r.partition: r for r in results})


def facts(**kw: Any) -> JobFacts:
    base: dict[str, Any] = {"generation": 1, "created": T0, "spec": job(), "trace_id": UID,
                            "partitions": NAMES, "queued": True,
                            "observation": observation(*(row(n) for n in NAMES))}
    base.update(kw)
    return JobFacts(**base)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


# --- retries ----------------------------------------------------------------------------


@pytest.mark.parametrize(("initial", "cap", "number", "expected"), [
    (2, 30, 1, 2.0), (2, 30, 2, 4.0), (2, 30, 3, 8.0), (2, 30, 5, 30.0), (0, 30, 3, 0.0),
    (2, 30, 0, 0.0), (5, 5, 4, 5.0),
])
def test_retry_delay_doubles_and_caps(initial: int, cap: int, number: int,
                                      expected: float) -> None:
    retry = RetrySpec(initial_delay_seconds=initial, max_delay_seconds=cap)
    assert policy.retry_delay(retry, number) == expected


@pytest.mark.parametrize(("status", "attempt", "kind", "max_retries", "expected"), [
    (TaskStatus.FAILED, 1, "query", 3, False),
    (TaskStatus.FAILED, 3, "query", 3, False),
    (TaskStatus.FAILED, 4, "query", 3, True),
    (TaskStatus.FAILED, 1, "query", 0, True),
    (TaskStatus.FAILED, 1, "poison", 3, True),
    (TaskStatus.DEAD, 1, None, 3, True),
    (TaskStatus.PROCESSING, 9, None, 3, False),
    (TaskStatus.DONE, 9, None, 0, False),
])
def test_exhausted(status: TaskStatus, attempt: int, kind: str | None, max_retries: int,
                   expected: bool) -> None:
    retry = RetrySpec(max_retries=max_retries)
    assert policy.exhausted(row("p00", status, attempt, failure_kind=kind), retry) is expected


FAILED_AT_10 = {"finished_at": at(10), "updated_at": at(10), "failure_kind": "query",
                "error": "division by zero"}


@pytest.mark.parametrize(("case", "rows", "now", "spec", "expected"), [
    ("failed, backoff not over", [row("p00", TaskStatus.FAILED, 1, **FAILED_AT_10)], at(11),
     {}, []),
    ("failed, backoff over (2 s)", [row("p00", TaskStatus.FAILED, 1, **FAILED_AT_10)], at(12),
     {}, [("p00", 2, RepublishReason.RETRY)]),
    ("second retry waits 4 s", [row("p00", TaskStatus.FAILED, 2, **FAILED_AT_10)], at(13),
     {}, []),
    ("second retry after 4 s", [row("p00", TaskStatus.FAILED, 2, **FAILED_AT_10)], at(14),
     {}, [("p00", 3, RepublishReason.RETRY)]),
    ("budget spent", [row("p00", TaskStatus.FAILED, 4, **FAILED_AT_10)], at(100), {}, []),
    ("exhausted partition stops every retry",
     [row("p00", TaskStatus.FAILED, 4, **FAILED_AT_10),
      row("p01", TaskStatus.FAILED, 1, **FAILED_AT_10)], at(100), {}, []),
    ("suspended", [row("p00", TaskStatus.FAILED, 1, **FAILED_AT_10)], at(100),
     {"suspend": True}, []),
    ("processing within the deadline",
     [row("p00", TaskStatus.PROCESSING, 1, started_at=at(0), updated_at=at(0))], at(90), {}, []),
    ("processing past the deadline without progress",
     [row("p00", TaskStatus.PROCESSING, 1, started_at=at(0), updated_at=at(0), worker="w1")],
     at(91), {}, [("p00", 2, RepublishReason.STUCK)]),
    ("stuck, short deadline",
     [row("p00", TaskStatus.PROCESSING, 2, started_at=at(0), updated_at=at(0))], at(6),
     {"sla": {"deadlineSeconds": 5}}, [("p00", 3, RepublishReason.STUCK)]),
    ("stuck but out of retries",
     [row("p00", TaskStatus.PROCESSING, 4, started_at=at(0), updated_at=at(0))], at(1000),
     {}, []),
    ("queued and done partitions are left alone",
     [row("p00"), row("p01", TaskStatus.DONE)], at(1000), {}, []),
    ("a partition the job does not run is ignored",
     [row("p99", TaskStatus.FAILED, 1, **FAILED_AT_10)], at(100), {}, []),
])
def test_decide_republish(case: str, rows: list[PartitionRow], now: datetime,
                          spec: dict[str, Any], expected: list[tuple[str, int, RepublishReason]]
                          ) -> None:
    decisions = policy.decide_republish(job(**spec), {r.partition: r for r in rows}, NAMES, now)
    assert [(d.partition, d.attempt, d.reason) for d in decisions] == expected, case


def test_a_stuck_republish_is_guarded_by_the_observed_row() -> None:
    stuck = row("p00", TaskStatus.PROCESSING, 1, started_at=at(0), updated_at=at(3), worker="w1")
    (decision,) = policy.decide_republish(job(), {"p00": stuck}, NAMES, at(100))
    assert (decision.from_status, decision.from_attempt) == (TaskStatus.PROCESSING, 1)
    assert decision.observed_updated_at == at(3)
    assert "w1" in decision.message and "90s" in decision.message


@pytest.mark.parametrize(("rows", "expected"), [
    ([], ["p00", "p01", "p02"]),
    ([row("p00", attempt=0), row("p01", attempt=1), row("p02", TaskStatus.DONE)], ["p00"]),
    ([row("p00", attempt=0, job_id="other")], ["p01", "p02"]),
    ([row("p00", TaskStatus.CANCELLED, job_id="other"), row("p01", TaskStatus.FAILED,
                                                            job_id="other"),
      row("p02", TaskStatus.DONE, job_id="other")], ["p00", "p01"]),
    ([row("p00", TaskStatus.CANCELLED)], ["p01", "p02"]),
])
def test_partitions_to_queue(rows: list[PartitionRow], expected: list[str]) -> None:
    assert policy.partitions_to_queue(NAMES, {r.partition: r for r in rows}, UID) == expected


# --- spec edits -------------------------------------------------------------------------


@pytest.mark.parametrize(("queued", "current", "recorded", "fields"), [
    (None, {}, None, []),
    (None, {}, UID, []),
    (None, {"traceId": "new"}, UID, ["spec.traceId"]),
    ({"traceId": "a"}, {"traceId": "a"}, "a", []),
    ({"traceId": "a"}, {"traceId": "b"}, "a", ["spec.traceId"]),
    ({"traceId": "a"}, {}, "a", ["spec.traceId"]),
    ({}, {"suspend": True, "sla": {"deadlineSeconds": 5}}, UID, []),
    ({}, {"partitions": ["p01"]}, UID, ["spec.partitions"]),
    ({}, {"output": {"uriPrefix": "s3://other-bucket/x"}}, UID, ["spec.output"]),
])
def test_refused_changes(queued: dict[str, Any] | None, current: dict[str, Any],
                         recorded: str | None, fields: list[str]) -> None:
    errors = policy.refused_changes(job(**queued) if queued is not None else None,
                                    job(**current), recorded)
    assert [e.field for e in errors] == fields
    assert all(e.message.startswith(e.field) for e in errors)


def test_effective_spec_keeps_the_join_and_takes_the_knobs() -> None:
    queued = job(partitions=["p00"])
    current = job(partitions=["p01"], suspend=True, sla={"deadlineSeconds": 7},
                  retry={"maxRetries": 1}, ttlSecondsAfterFinished=30)
    effective = policy.effective_spec(queued, current, current_valid=True)
    assert effective is not None
    assert effective.partitions == ["p00"]
    assert (effective.suspend, effective.sla.deadline_seconds, effective.retry.max_retries,
            effective.ttl_seconds_after_finished) == (True, 7, 1, 30)
    assert policy.effective_spec(queued, current, current_valid=False) == queued
    assert policy.effective_spec(None, current, current_valid=False) is None
    assert policy.effective_spec(None, current, current_valid=True) == current


# --- SLA, severity, phase ---------------------------------------------------------------


@pytest.mark.parametrize(("now", "completed", "succeeded", "suspended", "previous", "expected"), [
    (at(10), None, False, False, None, SlaState.ON_TRACK),
    (at(72), None, False, False, SlaState.ON_TRACK, SlaState.AT_RISK),
    (at(91), None, False, False, SlaState.AT_RISK, SlaState.BREACHED),
    (at(91), None, False, True, SlaState.AT_RISK, SlaState.AT_RISK),
    (at(200), at(80), True, False, SlaState.AT_RISK, SlaState.MET),
    (at(200), at(95), True, False, SlaState.AT_RISK, SlaState.BREACHED),
    (at(200), at(50), False, False, SlaState.ON_TRACK, SlaState.ON_TRACK),
    (at(10), None, False, False, SlaState.BREACHED, SlaState.BREACHED),
])
def test_sla_verdict(now: datetime, completed: datetime | None, succeeded: bool,
                     suspended: bool, previous: SlaState | None, expected: SlaState) -> None:
    verdict = policy.sla_verdict(start=T0, deadline_seconds=90, now=now, completed_at=completed,
                                 succeeded=succeeded, suspended=suspended, previous=previous)
    assert verdict.state is expected
    assert verdict.deadline == at(90)


def test_sla_clock_needs_a_start() -> None:
    verdict = policy.sla_verdict(start=None, deadline_seconds=90, now=at(1000), completed_at=None,
                                 succeeded=False, suspended=False, previous=None)
    assert verdict.state is None


@pytest.mark.parametrize(("previous", "kw", "expected"), [
    (None, {}, None),
    (None, {"breached": True}, Severity.P3),
    (None, {"breached": True, "overdue_twice": True}, Severity.P2),
    (None, {"materialization_failure": True}, Severity.P1),
    (None, {"failed": True}, Severity.P1),
    (Severity.P2, {"breached": True}, Severity.P2),
    (Severity.P3, {}, Severity.P3),
])
def test_job_severity_only_rises(previous: Severity | None, kw: dict[str, bool],
                                 expected: Severity | None) -> None:
    flags = {"breached": False, "overdue_twice": False, "failed": False,
             "materialization_failure": False, **kw}
    assert policy.job_severity(previous, **flags) is expected


def cond(kind: str, status: str, reason: str = "R") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason}


@pytest.mark.parametrize(("conds", "previous", "expected"), [
    ([], None, JobPhase.PENDING),
    ([cond("Progressing", "False", "WorkerPoolNotFound")], None, JobPhase.PENDING),
    ([cond("Progressing", "True", "Queued")], None, JobPhase.QUEUED),
    ([cond("Progressing", "True", "Running")], None, JobPhase.RUNNING),
    ([cond("Progressing", "Unknown", "BackendUnavailable")], JobPhase.RUNNING, JobPhase.RUNNING),
    ([cond("Suspended", "True"), cond("Progressing", "False")], None, JobPhase.SUSPENDED),
    ([cond("Suspended", "False"), cond("Progressing", "True", "Running")], None,
     JobPhase.RUNNING),
    ([cond("Complete", "True"), cond("Suspended", "True")], None, JobPhase.SUCCEEDED),
    ([cond("Failed", "True"), cond("Complete", "True")], None, JobPhase.FAILED),
])
def test_phase_from_conditions(conds: list[dict[str, str]], previous: JobPhase | None,
                               expected: JobPhase) -> None:
    assert policy.phase_from_conditions(conds, previous) is expected


# --- the whole status -------------------------------------------------------------------


SCENARIOS: list[tuple[str, dict[str, Any], JobPhase, dict[str, tuple[str, str]], list[str]]] = [
    ("invalid spec, nothing queued",
     {"invalid": [FieldError("spec.retry.initialDelaySeconds",
                                    "spec.retry.initialDelaySeconds: 60 must be ...")],
      "queued": False, "observation": None, "partitions": ()},
     JobPhase.FAILED,
     {"Accepted": ("False", "InvalidSpec"), "Failed": ("True", "InvalidSpec")},
     ["Failed", "InvalidSpec"]),
    ("pool missing",
     {"queued": False, "observation": None, "partitions": (),
      "blocked": Blocked(Blocker.WORKER_POOL_NOT_FOUND, "WorkerPool 'pool-a' not found")},
     JobPhase.PENDING,
     {"Accepted": ("True", "Valid"), "Progressing": ("False", "WorkerPoolNotFound")},
     ["Pending", "WorkerPoolNotFound"]),
    ("all published", {}, JobPhase.QUEUED, {"Progressing": ("True", "Queued")}, ["Queued"]),
    ("one processing",
     {"observation": observation(row("p00", TaskStatus.PROCESSING, started_at=at(1)),
                                 row("p01"), row("p02"))},
     JobPhase.RUNNING, {"Progressing": ("True", "Running")}, ["Running"]),
    ("all done",
     {"observation": observation(*(done(n)[0] for n in NAMES),
                                 results=tuple(done(n)[1] for n in NAMES))},
     JobPhase.SUCCEEDED,
     {"Complete": ("True", "AllPartitionsDone"), "SLABreached": ("False", "WithinDeadline")},
     ["Succeeded"]),
    ("a partition out of retries",
     {"observation": observation(row("p00", TaskStatus.FAILED, 4, failure_kind="query",
                                     error="division by zero", finished_at=at(3)),
                                 row("p01"), row("p02"))},
     JobPhase.FAILED, {"Failed": ("True", "RetriesExhausted")},
     ["Failed", "SeverityRaised"]),
    ("suspended before queueing",
     {"spec": job(suspend=True), "queued": False, "observation": observation()},
     JobPhase.SUSPENDED, {"Suspended": ("True", "Suspended")}, ["Suspended"]),
    ("traceId edit refused",
     {"refused": [FieldError("spec.traceId", "spec.traceId: is immutable once set")]},
     JobPhase.QUEUED, {"Accepted": ("False", "TraceIdImmutable")},
     ["Queued", "TraceIdImmutable"]),
]


@pytest.mark.parametrize(("case", "kw", "phase", "expected", "events"), SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
def test_assess(case: str, kw: dict[str, Any], phase: JobPhase,
                expected: dict[str, tuple[str, str]], events: list[str]) -> None:
    result = policy.assess(facts(**kw), {}, at(5))
    assert result.phase is phase
    assert result.status["phase"] == phase.value
    assert result.status["observedGeneration"] == 1
    found = conditions(result.status)
    for kind, value in expected.items():
        assert found[kind] == value, (case, found)
    assert [e.reason for e in result.events] == events, case
    assert all(c["observedGeneration"] == 1 for c in result.status["conditions"])


def test_invalid_spec_message_names_the_field_and_queues_nothing() -> None:
    error = FieldError("spec.source.predicate.distanceMeters",
                              "spec.source.predicate.distanceMeters: is required")
    result = policy.assess(facts(invalid=[error], queued=False, observation=None, partitions=()),
                           {}, at(1))
    failed = next(c for c in result.status["conditions"] if c["type"] == "Failed")
    assert "spec.source.predicate.distanceMeters" in failed["message"]
    assert "traceId" not in result.status and not result.status.get("partitions")
    assert result.status["completionTime"] == "2025-01-01T12:00:01Z"
    assert all(e.type == "Warning" for e in result.events)


def test_succeeded_status_has_counts_results_and_printer_fields() -> None:
    obs = observation(*(done(n, rows=i + 1)[0] for i, n in enumerate(NAMES)),
                      results=tuple(done(n, rows=i + 1)[1] for i, n in enumerate(NAMES)))
    result = policy.assess(facts(observation=obs), {}, at(30))
    status = result.status
    assert (status["progress"], status["partitionsDone"], status["partitionsTotal"]) == (
        "3/3", 3, 3)
    assert status["rows"] == 6 and status["bytes"] == 300
    assert [r["partition"] for r in status["results"]] == list(NAMES)
    assert all(r["sha256"] == SHA for r in status["results"])
    assert status["slaState"] == "Met" and status["traceId"] == UID
    assert status["activeContract"] == "v2.1"
    assert status["startTime"] == "2025-01-01T12:00:00Z"
    assert status["completionTime"] == "2025-01-01T12:00:30Z"
    assert result.finished_now and result.duration_s == 30.0
    assert {p["state"] for p in status["partitions"]} == {"Done"}


def test_sla_breach_names_the_slowest_partitions_and_raises_severity() -> None:
    spec = job(sla={"deadlineSeconds": 5})
    obs = observation(row("p00", TaskStatus.PROCESSING, started_at=at(1), updated_at=at(1)),
                      row("p01"), done("p02")[0])
    result = policy.assess(facts(spec=spec, observation=obs), {}, at(6))
    found = conditions(result.status)
    assert found["SLABreached"] == ("True", "DeadlineExceeded")
    message = next(c["message"] for c in result.status["conditions"]
                   if c["type"] == "SLABreached")
    assert "sla.deadlineSeconds (5s)" in message
    assert "p01 (Queued" in message and "p00 (Processing" in message and "p02" not in message
    assert result.status["slaState"] == "Breached" and result.status["severity"] == "P3"
    assert result.sla_breached_now
    assert [e.reason for e in result.events if e.type == "Warning"] == [
        "SLABreached", "SeverityRaised"]
    later = policy.assess(facts(spec=spec, observation=obs), result.status, at(11))
    assert later.status["severity"] == "P2"  # twice the deadline
    assert not later.sla_breached_now
    assert [e.reason for e in later.events] == ["SeverityRaised"]


def test_a_job_waiting_for_its_pool_breaches_too() -> None:
    blocked = Blocked(Blocker.WORKER_POOL_NOT_FOUND, "not found")
    result = policy.assess(facts(spec=job(sla={"deadlineSeconds": 5}), queued=False,
                                 observation=None, blocked=blocked, partitions=()), {}, at(6))
    assert conditions(result.status)["SLABreached"] == ("True", "DeadlineExceeded")
    assert "none observed yet" in next(c["message"] for c in result.status["conditions"]
                                       if c["type"] == "SLABreached")


def test_transition_time_changes_only_when_status_flips() -> None:
    running = observation(row("p00", TaskStatus.PROCESSING, started_at=at(1)), row("p01"),
                          row("p02"))
    first = policy.assess(facts(observation=running), {}, at(2))
    more = observation(done("p00")[0], row("p01", TaskStatus.PROCESSING, started_at=at(3)),
                       row("p02"))
    second = policy.assess(facts(observation=more, generation=2), first.status, at(40))

    def progressing(status: dict[str, Any]) -> dict[str, Any]:
        return next(c for c in status["conditions"] if c["type"] == "Progressing")

    assert progressing(first.status)["lastTransitionTime"] == "2025-01-01T12:00:02Z"
    assert progressing(second.status)["lastTransitionTime"] == "2025-01-01T12:00:02Z"
    assert progressing(second.status)["message"] != progressing(first.status)["message"]
    assert progressing(second.status)["observedGeneration"] == 2
    assert second.status["observedGeneration"] == 2
    assert second.events == []  # no transition, no Event
    blocked = policy.assess(facts(observation=None, generation=2, blocked=Blocked(
        Blocker.BACKEND_UNAVAILABLE, "OperationalError: down")), second.status, at(41))
    assert progressing(blocked.status)["status"] == "Unknown"
    assert progressing(blocked.status)["lastTransitionTime"] == "2025-01-01T12:00:41Z"
    assert blocked.phase is JobPhase.RUNNING, "an unknown Progressing keeps the last phase"
    assert blocked.status["partitions"] == second.status["partitions"]
    assert [e.reason for e in blocked.events] == ["BackendUnavailable"]
    recovered = policy.assess(facts(observation=more, generation=2), blocked.status, at(42))
    assert [e.reason for e in recovered.events] == ["Unblocked"]


def test_a_retry_does_not_take_a_running_job_back_to_queued() -> None:
    running = policy.assess(facts(observation=observation(
        row("p00", TaskStatus.PROCESSING, started_at=at(1)), row("p01"), row("p02"))), {}, at(2))
    requeued = observation(row("p00", attempt=2), row("p01"), row("p02"))
    later = policy.assess(facts(observation=requeued), running.status, at(3))
    assert later.phase is JobPhase.RUNNING and later.events == []
    fresh = policy.assess(facts(observation=requeued), {}, at(3))
    assert fresh.phase is JobPhase.RUNNING, "attempt 2 means attempt 1 ran"


def test_suspend_then_resume() -> None:
    suspended = policy.assess(facts(spec=job(suspend=True), queued=False,
                                    observation=observation()), {}, at(1))
    assert suspended.phase is JobPhase.SUSPENDED and "slaState" not in suspended.status
    resumed = policy.assess(facts(), suspended.status, at(2))
    assert resumed.phase is JobPhase.QUEUED
    assert conditions(resumed.status)["Suspended"] == ("False", "Resumed")
    assert [e.reason for e in resumed.events] == ["Queued", "Resumed"]


def test_a_corrected_spec_leaves_failed() -> None:
    error = FieldError("spec.bbox", "spec.bbox: bad")
    failed = policy.assess(facts(invalid=[error], queued=False, observation=None, partitions=()),
                           {}, at(1))
    fixed = policy.assess(facts(generation=2), failed.status, at(2))
    assert fixed.phase is JobPhase.QUEUED
    assert conditions(fixed.status)["Failed"] == ("False", "SpecCorrected")
    assert conditions(fixed.status)["Accepted"] == ("True", "Valid")
    assert "completionTime" not in fixed.status
    assert [e.reason for e in fixed.events] == ["Queued", "Accepted"]


def test_finished_jobs_do_not_flip_back() -> None:
    obs = observation(*(done(n)[0] for n in NAMES), results=tuple(done(n)[1] for n in NAMES))
    succeeded = policy.assess(facts(observation=obs), {}, at(10))
    later = policy.assess(facts(observation=observation(row("p00", TaskStatus.CANCELLED))),
                          succeeded.status, at(20))
    assert later.phase is JobPhase.SUCCEEDED and later.events == []
    assert later.status["completionTime"] == succeeded.status["completionTime"]


def test_partition_progress_messages() -> None:
    retry = RetrySpec(max_retries=2)
    failing = row("p00", TaskStatus.FAILED, 1, failure_kind="materialization", error="boom")
    assert policy.partition_progress("p00", failing, retry)["message"] == (
        "attempt 1 failed (materialization): boom; will retry (1 of 2)")
    last = replace(failing, attempt=3)
    assert policy.partition_progress("p00", last, retry)["message"] == (
        "failed after 3 attempt(s) (materialization): boom")
    assert policy.partition_progress("p00", None, retry) == {
        "name": "p00", "state": "Pending", "attempt": 0}
    assert policy.partition_progress("p00", row("p00", attempt=0), retry)["state"] == "Pending"
    long = replace(failing, error="x" * 10_000)
    assert len(policy.partition_progress("p00", long, retry)["message"]) < 1100


@pytest.mark.parametrize(("ttl", "phase", "completed", "now", "expected"), [
    (None, "Succeeded", at(0), at(1000), False),
    (10, "Running", None, at(1000), False),
    (10, "Succeeded", at(0), at(9), False),
    (10, "Succeeded", at(0), at(10), True),
    (0, "Failed", at(0), at(0), True),
])
def test_ttl_expired(ttl: int | None, phase: str, completed: datetime | None, now: datetime,
                     expected: bool) -> None:
    status = {"phase": phase, "completionTime": completed.isoformat() if completed else None}
    spec = job(ttlSecondsAfterFinished=ttl) if ttl is not None else job()
    assert policy.ttl_expired(spec, status, now) is expected


def test_settled_skips_only_finished_and_observed_jobs() -> None:
    obs = observation(*(done(n)[0] for n in NAMES), results=tuple(done(n)[1] for n in NAMES))
    succeeded = policy.assess(facts(observation=obs), {}, at(10)).status
    assert policy.settled(succeeded, 1)
    assert not policy.settled(succeeded, 2), "an edit must be looked at"
    running = policy.assess(facts(), {}, at(10)).status
    assert not policy.settled(running, 1)


def test_policy_imports_no_client_libraries() -> None:
    code = ("import sys, spatialjoin_operator.job_policy; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('kopf', 'kubernetes', 'confluent_kafka', 'psycopg', 'psycopg_pool')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
