"""What a diagnosis leaves on its job, as pure functions of the report and the clock.

The durable record is the ``spatialjoin.io/diagnosis`` annotation; the job
timer decides from it whether to diagnose (needs_diagnosis) and re-asserts
the Diagnosed condition from it. background.py does the I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from ..conditions import Condition, is_true, rfc3339, set_condition
from .findings import Finding
from .report import Report

DIAGNOSIS_ANNOTATION: Final = "spatialjoin.io/diagnosis"
CONDITION_TYPE: Final = "Diagnosed"
EVENT_REASON: Final = "Diagnosed"
SLA_BREACHED: Final = "SLABreached"
NO_CAUSE: Final = "NoCauseFound"
FAILED: Final = "DiagnosisFailed"
RETRY_FAILED_AFTER: Final = timedelta(minutes=5)
"""A failed diagnosis is tried again after this long (not on every timer tick)."""


def needs_diagnosis(annotations: Mapping[str, str], status: Mapping[str, Any],
                    now: datetime | None = None) -> bool:
    """The SLA is breached and no diagnosis of it has been recorded, or the last one
    failed (the database was unreachable, say) more than RETRY_FAILED_AFTER ago."""
    if not is_true(status.get("conditions"), SLA_BREACHED):
        return False
    raw = annotations.get(DIAGNOSIS_ANNOTATION)
    if not raw:
        return True
    try:
        recorded = json.loads(raw)
        if recorded.get("reason") != FAILED:
            return False
        retry_at = datetime.fromisoformat(str(recorded["retryAt"]))  # 3.11+ reads "Z"
    except (ValueError, KeyError, TypeError, AttributeError):
        return False  # hand-edited: leave it alone
    return (now or datetime.now(UTC)) >= retry_at


def condition_fields(finding: Finding | None) -> tuple[str, str]:
    """(reason, message) of the Diagnosed condition for the primary finding."""
    if finding is None:
        return NO_CAUSE, ("no database cause found: indexes, statistics, sizes and the "
                          "partition's plan look sound; look at the workers and the broker")
    return finding.code, f"{finding.cause}. Fix: {finding.fix}"


def annotation_value(report: Report) -> str:
    """The durable record: traceId, time, primary finding and every finding's code."""
    top = report.primary
    reason, message = condition_fields(top)
    return json.dumps({
        "traceId": report.facts.trace_id, "time": rfc3339(report.facts.now),
        "reason": reason, "severity": top.severity.value if top else "info",
        "message": message[:2000], "findings": [f.code for f in report.findings],
    }, sort_keys=True, separators=(",", ":"))


def condition_from_annotation(annotations: Mapping[str, str]) -> tuple[str, str] | None:
    """(reason, message) recorded in the annotation; for a timer that re-asserts the
    condition from it (level-based), None when there is none or it is unreadable."""
    raw = annotations.get(DIAGNOSIS_ANNOTATION)
    if not raw:
        return None
    try:
        value = json.loads(raw)
        return str(value["reason"]), str(value["message"])
    except (ValueError, KeyError, TypeError):
        return None


def with_condition(conditions: Sequence[Mapping[str, Any]], reason: str, message: str,
                   generation: int | None, now: datetime,
                   status: str = "True") -> list[Condition]:
    """``conditions`` with Diagnosed set (pure; the timer may use it too)."""
    return set_condition(conditions, type_=CONDITION_TYPE, status=status, reason=reason,
                         message=message, generation=generation, now=now)


def failure_annotation(trace_id: str, message: str, now: datetime) -> str:
    """The record of a failed diagnosis, with the time to try again."""
    return json.dumps({"traceId": trace_id, "time": rfc3339(now), "reason": FAILED,
                       "severity": "unknown", "message": message[:2000], "findings": [],
                       "retryAt": rfc3339(now + RETRY_FAILED_AFTER)},
                      sort_keys=True, separators=(",", ":"))
