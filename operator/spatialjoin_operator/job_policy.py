"""Pure decisions of a SpatialJoinJob's lifecycle.

Everything here is a function of (spec, observed partition rows, previous
status, now): which partitions to queue, which to retry or re-publish, the
conditions and the phase derived from them, the SLA verdict, the severity,
the Events a transition deserves, and whether the TTL has run out. Nothing
here imports kopf, kubernetes, Kafka or psycopg; the clock is an argument.

Bookkeeping in spatial_async_jobs that these decisions read: a row with
status 'queued' and attempt 0 is registered but not yet published; attempt N
(N >= 1) means the N-th attempt was published.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from spatialjoin_contracts.ddl import FailureKind, TaskStatus
from spatialjoin_contracts.models import (
    ContractVersion,
    Severity,
    SpatialJoinJobSpec,
    SpatialJoinJobStatus,
)
from spatialjoin_contracts.models.job import (
    S3_URI_PATTERN,
    SHA256_PATTERN,
    JobConditionType,
    JobPhase,
    PartitionState,
    RetrySpec,
    SlaState,
)
from spatialjoin_contracts.validation import FieldError, validate_job_update

from .conditions import Condition, get_condition, is_true, parse_time, rfc3339, set_condition
from .job_facts import (
    Assessment,
    Blocker,
    JobEvent,
    JobFacts,
    Observation,
    PartitionRow,
    ResultRow,
)

Status = Mapping[str, Any]
C = JobConditionType

AT_RISK_FRACTION: Final = 0.8
"""Share of sla.deadlineSeconds after which a running job is AtRisk."""
SLOWEST_LISTED: Final = 3
"""How many of the slowest partitions an SLABreached message names."""
ERROR_EXCERPT: Final = 1000
"""Characters of a partition's error kept in status."""

INVALID_SPEC: Final = "InvalidSpec"
TRACE_ID_IMMUTABLE: Final = "TraceIdImmutable"
FIELD_IMMUTABLE: Final = "FieldImmutable"

_SEVERITY_RANK: Final = {Severity.P3: 1, Severity.P2: 2, Severity.P1: 3}
_MATERIALIZATION_KINDS: Final = {FailureKind.MATERIALIZATION.value, FailureKind.SCHEMA_DRIFT.value}
_ROW_STATE: Final = {
    TaskStatus.QUEUED: PartitionState.QUEUED,
    TaskStatus.PROCESSING: PartitionState.PROCESSING,
    TaskStatus.DONE: PartitionState.DONE,
    TaskStatus.FAILED: PartitionState.FAILED,
    TaskStatus.DEAD: PartitionState.FAILED,
    TaskStatus.CANCELLED: PartitionState.PENDING,
}
# Fields that define what the job computes; once it is queued they cannot change.
_PLAN_FIELDS: Final = (
    ("worker_pool_ref", "workerPoolRef"),
    ("source", "source"),
    ("partitions", "partitions"),
    ("bbox", "bbox"),
    ("output", "output"),
)


# --- spec: immutability and the effective spec ------------------------------------------


def refused_changes(queued: SpatialJoinJobSpec | None, current: SpatialJoinJobSpec | None,
                    recorded_trace: str | None) -> list[FieldError]:
    """Edits the operator refuses: traceId once recorded, the join once queued."""
    if current is None:
        return []
    errors: list[FieldError] = []
    if recorded_trace is not None:
        base = queued or current.model_copy(update={"trace_id": None})
        errors += validate_job_update(base, current, recorded_trace)
    if queued is not None:
        for attr, name in _PLAN_FIELDS:
            if getattr(queued, attr) != getattr(current, attr):
                errors.append(FieldError(
                    f"spec.{name}", f"spec.{name}: cannot change once the job is queued; "
                                    "the job keeps running with the queued value"))
    return errors


def effective_spec(queued: SpatialJoinJobSpec | None, current: SpatialJoinJobSpec | None,
                   current_valid: bool) -> SpatialJoinJobSpec | None:
    """The join as queued; the mutable knobs (suspend, sla, retry, ttl) from the current spec."""
    if queued is None:
        return current if current_valid else None
    if current is None or not current_valid:
        return queued
    return queued.model_copy(update={
        "suspend": current.suspend, "sla": current.sla, "retry": current.retry,
        "ttl_seconds_after_finished": current.ttl_seconds_after_finished})


# --- retries ----------------------------------------------------------------------------


def retry_delay(retry: RetrySpec, number: int) -> float:
    """Backoff before retry ``number`` (1-based): initialDelaySeconds doubled each time, capped."""
    if number < 1:
        return 0.0
    return float(min(retry.initial_delay_seconds * 2 ** (number - 1), retry.max_delay_seconds))


def retries_used(row: PartitionRow) -> int:
    return max(row.attempt - 1, 0)


def exhausted(row: PartitionRow, retry: RetrySpec) -> bool:
    """The partition failed for good: dead-lettered, poison, or out of retries."""
    if row.status is TaskStatus.DEAD:
        return True
    if row.status is not TaskStatus.FAILED:
        return False
    return row.failure_kind == FailureKind.POISON.value or retries_used(row) >= retry.max_retries


class RepublishReason(StrEnum):
    RETRY = "Retry"
    """The attempt failed and the backoff has passed."""
    STUCK = "Stuck"
    """The attempt sat in 'processing' longer than sla.deadlineSeconds without progress."""


@dataclass(frozen=True)
class Republish:
    """Publish ``partition`` again as ``attempt``, if its row is still as observed."""

    partition: str
    attempt: int
    reason: RepublishReason
    from_status: TaskStatus
    from_attempt: int
    observed_updated_at: datetime | None
    message: str


def partitions_to_queue(partitions: Sequence[str], rows: Mapping[str, PartitionRow],
                        uid: str) -> list[str]:
    """Partitions with no row, our rows not yet published, and rows a deleted or failed
    earlier job with the same traceId left behind (taken over)."""
    wanted = []
    for name in partitions:
        row = rows.get(name)
        if (row is None
                or (row.job_id == uid and row.status is TaskStatus.QUEUED and row.attempt == 0)
                or (row.job_id != uid and row.status in (TaskStatus.CANCELLED, TaskStatus.FAILED,
                                                         TaskStatus.DEAD))):
            wanted.append(name)
    return wanted


def decide_republish(spec: SpatialJoinJobSpec, rows: Mapping[str, PartitionRow],
                     partitions: Sequence[str], now: datetime) -> list[Republish]:
    """Failed attempts past their backoff, and attempts stuck in processing, within the budget.

    Nothing while suspended, and nothing once a partition is exhausted (the job has failed).
    """
    mine = [rows[name] for name in partitions if name in rows]
    if spec.suspend or any(exhausted(row, spec.retry) for row in mine):
        return []
    decisions = []
    for row in mine:
        if row.attempt < 1 or retries_used(row) >= spec.retry.max_retries:
            continue
        budget = f"retry {row.attempt} of {spec.retry.max_retries}"
        if row.status is TaskStatus.FAILED:
            delay = retry_delay(spec.retry, row.attempt)
            since = row.finished_at or row.updated_at
            if since is None or now >= since + timedelta(seconds=delay):
                decisions.append(Republish(
                    row.partition, row.attempt + 1, RepublishReason.RETRY, row.status,
                    row.attempt, row.updated_at,
                    f"attempt {row.attempt} failed ({row.failure_kind or 'unknown'}): "
                    f"{_excerpt(row.error, 300)}; {budget} after {delay:g}s backoff"))
        elif row.status is TaskStatus.PROCESSING:
            since = row.updated_at or row.started_at
            limit = spec.sla.deadline_seconds
            if since is not None and (now - since).total_seconds() > limit:
                decisions.append(Republish(
                    row.partition, row.attempt + 1, RepublishReason.STUCK, row.status,
                    row.attempt, row.updated_at,
                    f"attempt {row.attempt} has been processing on worker "
                    f"{row.worker or '?'} for more than sla.deadlineSeconds ({limit}s) "
                    f"without progress; {budget}"))
    return decisions


# --- SLA and severity -------------------------------------------------------------------


@dataclass(frozen=True)
class SlaVerdict:
    state: SlaState | None
    deadline: datetime | None


def sla_verdict(*, start: datetime | None, deadline_seconds: int, now: datetime,
                completed_at: datetime | None, succeeded: bool, suspended: bool,
                previous: SlaState | None) -> SlaVerdict:
    """Where the job stands against its deadline. Breached is sticky; suspension freezes it."""
    if start is None:
        return SlaVerdict(previous, None)
    deadline = start + timedelta(seconds=deadline_seconds)
    if previous is SlaState.BREACHED:
        return SlaVerdict(SlaState.BREACHED, deadline)
    if completed_at is not None:
        if completed_at > deadline:
            return SlaVerdict(SlaState.BREACHED, deadline)
        return SlaVerdict(SlaState.MET if succeeded else previous, deadline)
    if suspended:
        return SlaVerdict(previous, deadline)
    if now > deadline:
        return SlaVerdict(SlaState.BREACHED, deadline)
    if now >= start + timedelta(seconds=deadline_seconds * AT_RISK_FRACTION):
        return SlaVerdict(SlaState.AT_RISK, deadline)
    return SlaVerdict(SlaState.ON_TRACK, deadline)


def slowest_partitions(progress: Sequence[Mapping[str, Any]], start: datetime,
                       now: datetime) -> list[str]:
    """Unfinished partitions, longest waiting first; when all finished, the longest-running."""
    def began(entry: Mapping[str, Any]) -> datetime:
        return parse_time(entry.get("startedAt")) or start

    def took(entry: Mapping[str, Any]) -> float:
        end = parse_time(entry.get("finishedAt")) or now
        return (end - began(entry)).total_seconds()

    unfinished = [e for e in progress if e["state"] != PartitionState.DONE.value]
    ranked = (sorted(unfinished, key=lambda e: (began(e) if e["state"] ==
                                                PartitionState.PROCESSING.value else start))
              if unfinished else sorted(progress, key=took, reverse=True))
    return [f"{e['name']} ({e['state']}, {took(e):.0f}s)" for e in ranked]


def job_severity(previous: Severity | None, *, breached: bool, overdue_twice: bool,
                 failed: bool, materialization_failure: bool) -> Severity | None:
    """P1 on failure or a materialization/schema-drift failure, P2 at twice the deadline,
    P3 on an SLA breach. Never lowered: severity records the worst the job went through."""
    derived = (Severity.P1 if failed or materialization_failure
               else Severity.P2 if overdue_twice
               else Severity.P3 if breached else None)
    candidates = [s for s in (previous, derived) if s is not None]
    return max(candidates, key=_SEVERITY_RANK.__getitem__) if candidates else None


# --- phase, status and events -----------------------------------------------------------


def phase_from_conditions(conditions: Sequence[Mapping[str, Any]],
                          previous: JobPhase | None = None) -> JobPhase:
    """Failed, Succeeded, Suspended, then Progressing's reason; Unknown keeps the last phase."""
    if is_true(conditions, C.FAILED):
        return JobPhase.FAILED
    if is_true(conditions, C.COMPLETE):
        return JobPhase.SUCCEEDED
    if is_true(conditions, C.SUSPENDED):
        return JobPhase.SUSPENDED
    progressing = get_condition(conditions, C.PROGRESSING)
    if progressing is None:
        return JobPhase.PENDING
    if progressing.get("status") == "Unknown":
        return previous or JobPhase.PENDING
    if progressing.get("status") == "True":
        return JobPhase.RUNNING if progressing.get("reason") == "Running" else JobPhase.QUEUED
    return JobPhase.PENDING


def partition_progress(name: str, row: PartitionRow | None, retry: RetrySpec) -> dict[str, Any]:
    """One status.partitions entry from its row (Pending when not registered or published)."""
    if row is None:
        return {"name": name, "state": PartitionState.PENDING.value, "attempt": 0}
    pending = row.status is TaskStatus.QUEUED and row.attempt == 0
    state = PartitionState.PENDING if pending else _ROW_STATE[row.status]
    entry: dict[str, Any] = {"name": name, "state": state.value, "attempt": row.attempt}
    for key, value in (("worker", row.worker), ("rows", row.rows), ("bytes", row.bytes),
                       ("startedAt", _time(row.started_at)),
                       ("finishedAt", _time(row.finished_at))):
        if value is not None:
            entry[key] = value
    message = _partition_message(row, retry)
    if message:
        entry["message"] = message
    return entry


def _partition_message(row: PartitionRow, retry: RetrySpec) -> str | None:
    error = _excerpt(row.error, ERROR_EXCERPT)
    kind = row.failure_kind or "unknown"
    if row.status is TaskStatus.DEAD:
        return f"dead-lettered: {error}"
    if row.status is TaskStatus.FAILED:
        if exhausted(row, retry):
            return f"failed after {row.attempt} attempt(s) ({kind}): {error}"
        return (f"attempt {row.attempt} failed ({kind}): {error}; will retry "
                f"({retries_used(row) + 1} of {retry.max_retries})")
    if row.status is TaskStatus.CANCELLED:
        return "cancelled: the job that queued it was deleted"
    if row.status in (TaskStatus.QUEUED, TaskStatus.PROCESSING) and row.error:
        return f"attempt {row.attempt} after: {error}"
    return None


def assess(facts: JobFacts, previous: Status, now: datetime) -> Assessment:
    """The new status of a job and the Events its transitions deserve."""
    prev = dict(previous or {})
    status: dict[str, Any] = {k: v for k, v in prev.items() if k != "conditions"}
    conds = _Conditions(prev.get("conditions") or [], facts.generation, now)
    spec = facts.spec
    finished_before = _final(conds.items)

    _accept(conds, facts)
    if facts.invalid and not facts.queued:
        message = _join(facts.invalid)
        conds.put(C.FAILED, "True", INVALID_SPEC, message)
        conds.put(C.PROGRESSING, "False", INVALID_SPEC, "nothing was queued; fix the spec")
    elif spec is not None:
        if get_condition(conds.items, C.FAILED) and _reason(conds.items, C.FAILED) == INVALID_SPEC:
            conds.put(C.FAILED, "False", "SpecCorrected", "the spec is valid now")
        _suspension(conds, spec, finished_before)
        if facts.blocked is not None:
            conds.put(C.PROGRESSING, "Unknown" if facts.queued else "False",
                      facts.blocked.reason.value, facts.blocked.message)
        else:
            status.update(_observed(facts, spec, conds, prev, finished_before))
    if facts.queued and facts.trace_id:
        status["traceId"] = facts.trace_id

    finished = _finished(conds.items)
    if finished and not status.get("completionTime"):
        status["completionTime"] = rfc3339(now)
    if not finished:
        status.pop("completionTime", None)
    breached_now = _sla(status, conds, facts, prev, now)
    phase = phase_from_conditions(conds.items, _phase(prev.get("phase")))
    status.update(observedGeneration=facts.generation, phase=phase.value,
                  conditions=conds.items)
    validated = SpatialJoinJobStatus.model_validate(status).to_k8s()
    return Assessment(validated, transition_events(prev, validated), phase, breached_now,
                      finished and not finished_before, _duration(validated))


class _Conditions:
    """A condition list being rewritten with one generation and one clock."""

    def __init__(self, items: Sequence[Mapping[str, Any]], generation: int | None,
                 now: datetime) -> None:
        self.items: list[Condition] = [dict(c) for c in items]
        self._generation = generation
        self._now = now

    def put(self, kind: JobConditionType, status: str, reason: str, message: str) -> None:
        self.items = set_condition(self.items, type_=kind.value, status=status, reason=reason,
                                   message=message, generation=self._generation, now=self._now)


def _accept(conds: _Conditions, facts: JobFacts) -> None:
    if facts.invalid:
        conds.put(C.ACCEPTED, "False", INVALID_SPEC, _join(facts.invalid))
    elif facts.refused:
        traced = any(e.field == "spec.traceId" for e in facts.refused)
        conds.put(C.ACCEPTED, "False", TRACE_ID_IMMUTABLE if traced else FIELD_IMMUTABLE,
                  f"{_join(facts.refused)}; the job continues with traceId {facts.trace_id!r}")
    elif facts.spec is not None:
        conds.put(C.ACCEPTED, "True", "Valid", "the spec is valid")


def _suspension(conds: _Conditions, spec: SpatialJoinJobSpec, finished: bool) -> None:
    if finished:
        return
    if spec.suspend:
        conds.put(C.SUSPENDED, "True", "Suspended",
                  "spec.suspend is true: nothing is published; published partitions still run")
    elif get_condition(conds.items, C.SUSPENDED) is not None:
        conds.put(C.SUSPENDED, "False", "Resumed", "spec.suspend is false: publishing resumed")


def _observed(facts: JobFacts, spec: SpatialJoinJobSpec, conds: _Conditions,
              prev: Mapping[str, Any], finished_before: bool) -> dict[str, Any]:
    """Partition progress, counts, results, start time, and the progress conditions."""
    obs = facts.observation or Observation()
    names = list(facts.partitions)
    rows = {name: obs.rows[name] for name in names if name in obs.rows}
    progress = [partition_progress(name, rows.get(name), spec.retry) for name in names]
    results = [r for r in (_result(obs.results[n]) for n in names if n in obs.results) if r]
    done = sum(1 for e in progress if e["state"] == PartitionState.DONE.value)
    failed = [row for row in rows.values() if exhausted(row, spec.retry)]
    total = len(names)
    fields: dict[str, Any] = {
        "partitions": progress, "partitionsTotal": total, "partitionsDone": done,
        "partitionsFailed": len(failed), "progress": f"{done}/{total}", "results": results,
        "rows": sum(r["rows"] for r in results), "bytes": sum(r.get("bytes", 0) for r in results),
        "activeContract": _active_contract(obs, names, spec, facts.pool_contract),
    }
    queued_times = [row.queued_at for row in rows.values() if row.queued_at is not None]
    start = prev.get("startTime") or (_time(min(queued_times)) if queued_times else None)
    if start:
        fields["startTime"] = start
    if finished_before:
        return fields
    if total and done == total:
        conds.put(C.COMPLETE, "True", "AllPartitionsDone",
                  f"{total} partitions materialized: {fields['rows']} rows, "
                  f"{fields['bytes']} bytes")
        conds.put(C.PROGRESSING, "False", "Finished", "all partitions are done")
    elif failed:
        first = failed[0]
        conds.put(C.FAILED, "True", "RetriesExhausted",
                  f"partition {first.partition} {_partition_message(first, spec.retry)}")
        conds.put(C.PROGRESSING, "False", "Failed",
                  f"{len(failed)} partition(s) failed; no further attempts are published")
    elif spec.suspend:
        conds.put(C.PROGRESSING, "False", "Suspended", "spec.suspend is true")
    elif (_reason(conds.items, C.PROGRESSING) == "Running"  # Running is not undone by a retry
          or any(row.started or row.attempt > 1 for row in rows.values())):
        running = sum(1 for e in progress if e["state"] == PartitionState.PROCESSING.value)
        conds.put(C.PROGRESSING, "True", "Running",
                  f"{done}/{total} partitions done, {running} processing")
    elif any(row.published for row in rows.values()):
        conds.put(C.PROGRESSING, "True", "Queued",
                  f"{total} partitions published; waiting for workers")
    else:
        conds.put(C.PROGRESSING, "False", "Pending", "no partition has been published yet")
    return fields


def _sla(status: dict[str, Any], conds: _Conditions, facts: JobFacts, prev: Mapping[str, Any],
         now: datetime) -> bool:
    """slaState, deadlineTime, the SLABreached condition and severity; True on a new breach."""
    spec = facts.spec
    if spec is None or (facts.invalid and not facts.queued):
        return False
    start = parse_time(status.get("startTime"))
    if start is None and not spec.suspend:
        start = facts.created  # waiting for a pool counts against the deadline too
    completed = parse_time(status.get("completionTime"))
    verdict = sla_verdict(start=start, deadline_seconds=spec.sla.deadline_seconds, now=now,
                          completed_at=completed, succeeded=is_true(conds.items, C.COMPLETE),
                          suspended=spec.suspend, previous=_sla_state(prev.get("slaState")))
    breached = verdict.state is SlaState.BREACHED
    already = is_true(conds.items, C.SLA_BREACHED)
    if start is not None and verdict.state is not None and verdict.deadline is not None:
        status["slaState"] = verdict.state.value
        status["deadlineTime"] = rfc3339(verdict.deadline)
        if breached and not already:
            conds.put(C.SLA_BREACHED, "True", "DeadlineExceeded",
                      _breach_message(status, spec, start, completed or now))
        elif not breached:
            conds.put(C.SLA_BREACHED, "False", "WithinDeadline",
                      f"deadline {rfc3339(verdict.deadline)} (sla.deadlineSeconds "
                      f"{spec.sla.deadline_seconds}s)")
    rows = (facts.observation or Observation()).rows
    overdue_twice = (start is not None and completed is None and
                     now >= start + timedelta(seconds=2 * spec.sla.deadline_seconds))
    severity = job_severity(
        _severity(prev.get("severity")), breached=breached, overdue_twice=overdue_twice,
        failed=is_true(conds.items, C.FAILED),
        materialization_failure=any(rows[n].failure_kind in _MATERIALIZATION_KINDS
                                    for n in facts.partitions if n in rows))
    if severity is not None:
        status["severity"] = severity.value
    return breached and not already


def _breach_message(status: Mapping[str, Any], spec: SpatialJoinJobSpec, start: datetime,
                    until: datetime) -> str:
    slowest = slowest_partitions(status.get("partitions") or [], start, until)
    named = ", ".join(slowest[:SLOWEST_LISTED]) or "none observed yet"
    if len(slowest) > SLOWEST_LISTED:
        named += f" and {len(slowest) - SLOWEST_LISTED} more"
    return (f"job age {(until - start).total_seconds():.1f}s exceeds sla.deadlineSeconds "
            f"({spec.sla.deadline_seconds}s); slowest partitions: {named}")


def transition_events(previous: Status, new: Status) -> list[JobEvent]:
    """One Event per transition: phase, refusals, blockers, SLA breach, resume, severity."""
    before = previous.get("conditions") or []
    after = new.get("conditions") or []
    events: list[JobEvent] = []
    old_phase, phase = previous.get("phase"), new.get("phase")
    if phase != old_phase:
        driver = _phase_driver(after, phase)
        events.append(JobEvent("Warning" if phase == JobPhase.FAILED.value else "Normal",
                               str(phase), f"{old_phase or 'New'} -> {phase}: {driver}"))
    accepted, was = get_condition(after, C.ACCEPTED), get_condition(before, C.ACCEPTED)
    if accepted is not None and _flipped(was, accepted):
        if accepted["status"] == "False":
            events.append(JobEvent("Warning", accepted["reason"], accepted["message"]))
        elif was is not None:
            events.append(JobEvent("Normal", "Accepted", "the spec is accepted again"))
    blockers = {b.value for b in Blocker}
    progressing, was = get_condition(after, C.PROGRESSING), get_condition(before, C.PROGRESSING)
    if progressing is not None and _flipped(was, progressing):
        if progressing["reason"] in blockers:
            events.append(JobEvent("Warning", progressing["reason"], progressing["message"]))
        elif was is not None and was.get("reason") in blockers:
            events.append(JobEvent("Normal", "Unblocked", progressing["message"]))
    breach, was = get_condition(after, C.SLA_BREACHED), get_condition(before, C.SLA_BREACHED)
    if breach is not None and breach["status"] == "True" and _flipped(was, breach):
        events.append(JobEvent("Warning", "SLABreached", breach["message"]))
    suspended, was = get_condition(after, C.SUSPENDED), get_condition(before, C.SUSPENDED)
    if suspended is not None and was is not None and _flipped(was, suspended) \
            and suspended["status"] == "False":
        events.append(JobEvent("Normal", "Resumed", suspended["message"]))
    old_sev, sev = _severity(previous.get("severity")), _severity(new.get("severity"))
    if sev is not None and sev != old_sev:
        events.append(JobEvent("Warning", "SeverityRaised",
                               f"severity {old_sev.value if old_sev else 'none'} -> {sev.value}"))
    return events


def ttl_expired(spec: SpatialJoinJobSpec | None, status: Status, now: datetime) -> bool:
    """A finished job whose ttlSecondsAfterFinished has passed since completionTime."""
    if spec is None or spec.ttl_seconds_after_finished is None:
        return False
    if status.get("phase") not in (JobPhase.SUCCEEDED.value, JobPhase.FAILED.value):
        return False
    completed = parse_time(status.get("completionTime"))
    return completed is not None and now >= completed + timedelta(
        seconds=spec.ttl_seconds_after_finished)


def settled(status: Status, generation: int | None) -> bool:
    """Finished, this generation seen, and no partition can change any more: skip observing."""
    conditions = status.get("conditions") or []
    if not _finished(conditions) or status.get("observedGeneration") != generation:
        return False
    terminal = {PartitionState.DONE.value, PartitionState.FAILED.value}
    return all(e.get("state") in terminal for e in status.get("partitions") or []) or (
        _reason(conditions, C.FAILED) == INVALID_SPEC)


# --- small helpers ----------------------------------------------------------------------


def finished(status: Status) -> bool:
    """Succeeded or failed for good: nothing more is published for the job."""
    return _final(status.get("conditions") or [])


def _finished(conditions: Sequence[Mapping[str, Any]]) -> bool:
    """Complete or Failed, an invalid spec included (completionTime, TTL)."""
    return is_true(conditions, C.COMPLETE) or is_true(conditions, C.FAILED)


def _final(conditions: Sequence[Mapping[str, Any]]) -> bool:
    """Complete or Failed for a reason a spec edit cannot undo."""
    return is_true(conditions, C.COMPLETE) or (
        is_true(conditions, C.FAILED) and _reason(conditions, C.FAILED) != INVALID_SPEC)


def _reason(conditions: Sequence[Mapping[str, Any]], kind: JobConditionType) -> str | None:
    found = get_condition(conditions, kind)
    return None if found is None else str(found.get("reason"))


def _flipped(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> bool:
    return (before is None or before.get("status") != after.get("status")
            or before.get("reason") != after.get("reason"))


def _phase_driver(conditions: Sequence[Mapping[str, Any]], phase: object) -> str:
    kind = {JobPhase.FAILED.value: C.FAILED, JobPhase.SUCCEEDED.value: C.COMPLETE,
            JobPhase.SUSPENDED.value: C.SUSPENDED}.get(str(phase), C.PROGRESSING)
    found = get_condition(conditions, kind)
    return str(found.get("message", "")) if found else ""


def _result(row: ResultRow) -> dict[str, Any] | None:
    if not row.uri or not re.match(S3_URI_PATTERN, row.uri) \
            or not re.match(SHA256_PATTERN, row.sha256):
        return None
    return {"partition": row.partition, "uri": row.uri, "rows": row.rows, "bytes": row.bytes,
            "sha256": row.sha256}


def _active_contract(obs: Observation, names: Sequence[str], spec: SpatialJoinJobSpec,
                     pool: ContractVersion | None) -> str:
    """The oldest contract among the written results; before any, what the pool would use."""
    written = {obs.results[n].contract for n in names if n in obs.results}
    if written:
        return min(written)
    requested = spec.output.contract
    return min(requested, pool).value if pool is not None else requested.value


def _join(errors: Sequence[FieldError]) -> str:
    return "; ".join(e.message for e in errors)


def _excerpt(text: str | None, limit: int) -> str:
    text = (text or "no error recorded").strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else rfc3339(moment)


def _duration(status: Mapping[str, Any]) -> float | None:
    start, end = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    return None if start is None or end is None else max((end - start).total_seconds(), 0.0)


def _enum_or_none(kind: Callable[[str], Any]) -> Callable[[object], Any]:
    def parse(value: object) -> Any:
        try:
            return kind(str(value)) if value else None
        except ValueError:
            return None
    return parse


_phase: Callable[[object], JobPhase | None] = _enum_or_none(JobPhase)
_severity: Callable[[object], Severity | None] = _enum_or_none(Severity)
_sla_state: Callable[[object], SlaState | None] = _enum_or_none(SlaState)
