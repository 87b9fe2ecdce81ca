"""The record of an escalation: one incident id in four places.

Every action the policy takes becomes an ``IncidentRecord`` with a uuid
(a step down carries the id of the incident it steps down from), written as

* a Kubernetes Event on the WorkerPool (Warning for an escalation, Normal
  for a step down), its message naming the incident id;
* an entry in ``status.escalations`` (the newest ESCALATION_HISTORY_LIMIT);
* ``spatialjoin_operator_escalations_total{severity,action}``;
* one JSON line on the ``spatialjoin.audit`` logger (stderr), with the
  incident id, severity, trigger, observed value, threshold, action and
  escalation path.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

import structlog

from spatialjoin_contracts.models.common import Severity
from spatialjoin_contracts.models.pool import (
    ESCALATION_HISTORY_LIMIT,
    EscalationAction,
    EscalationTrigger,
)

from .conditions import rfc3339
from .pool_metrics import ESCALATIONS
from .pool_policy import ESCALATION_PATH, Action

AUDIT_LOGGER: Final = "spatialjoin.audit"
MESSAGE_LIMIT: Final = 4096


@dataclass(frozen=True)
class IncidentRecord:
    incident_id: str
    namespace: str
    pool: str
    severity: Severity
    trigger: EscalationTrigger
    action: EscalationAction
    observed: float
    threshold: float
    detail: str
    time: datetime

    @property
    def escalation_path(self) -> str:
        return ESCALATION_PATH[self.severity]

    @property
    def is_step_down(self) -> bool:
        return self.action is EscalationAction.STEP_DOWN

    def message(self) -> str:
        relation = "<=" if self.is_step_down else ">"
        text = (f"{self.severity.value} {self.trigger.value}: observed {self.observed:g} "
                f"{relation} threshold {self.threshold:g}; {self.action.value}: {self.detail}; "
                f"escalation path {self.escalation_path}; incident {self.incident_id}")
        return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."

    def status_entry(self) -> dict[str, Any]:
        """A status.escalations item (the contract's Escalation, camelCase)."""
        return {"incidentId": self.incident_id, "severity": self.severity.value,
                "trigger": self.trigger.value, "action": self.action.value,
                "time": rfc3339(self.time), "message": self.message()}

    def audit_fields(self) -> dict[str, Any]:
        return {"incident_id": self.incident_id, "namespace": self.namespace,
                "workerpool": self.pool, "severity": self.severity.value,
                "trigger": self.trigger.value, "observed": self.observed,
                "threshold": self.threshold, "action": self.action.value,
                "detail": self.detail, "escalation_path": self.escalation_path,
                "time": rfc3339(self.time)}


def records_for(actions: Iterable[Action], *, namespace: str, pool: str, now: datetime,
                new_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> list[IncidentRecord]:
    """One record per action; new incidents get a fresh id, step downs keep theirs."""
    return [IncidentRecord(incident_id=a.incident_id or new_id(), namespace=namespace, pool=pool,
                           severity=a.severity, trigger=a.trigger, action=a.action,
                           observed=a.observed, threshold=a.threshold, detail=a.detail,
                           time=now)
            for a in actions]


def history(previous: Sequence[Mapping[str, Any]], records: Iterable[IncidentRecord],
            limit: int = ESCALATION_HISTORY_LIMIT) -> list[dict[str, Any]]:
    """status.escalations with the new entries appended, oldest dropped past ``limit``."""
    entries = [dict(e) for e in previous] + [r.status_entry() for r in records]
    return entries[-limit:]


class EventPoster(Protocol):
    def __call__(self, body: Mapping[str, Any], *, type: str, reason: str,
                 message: str) -> None: ...


def emit(record: IncidentRecord, body: Mapping[str, Any], post_event: EventPoster) -> None:
    """Event, counter and audit line (the status entry is written with the status)."""
    post_event(body, type="Normal" if record.is_step_down else "Warning",
               reason=f"{record.severity.value}{record.action.value}",
               message=record.message())
    ESCALATIONS.labels(severity=record.severity.value, action=record.action.value).inc()
    audit_logger().warning("escalation", **record.audit_fields())


_audit: structlog.stdlib.BoundLogger | None = None


def audit_logger() -> structlog.stdlib.BoundLogger:
    """A JSON-lines logger of its own, independent of how kopf configured logging."""
    global _audit
    if _audit is None:
        stdlib = logging.getLogger(AUDIT_LOGGER)
        if not stdlib.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            stdlib.addHandler(handler)
        stdlib.setLevel(logging.INFO)
        stdlib.propagate = False
        _audit = structlog.wrap_logger(
            stdlib, wrapper_class=structlog.stdlib.BoundLogger,
            processors=[structlog.processors.add_log_level,
                        structlog.processors.TimeStamper(fmt="iso", utc=True, key="logged_at"),
                        structlog.processors.JSONRenderer(sort_keys=True)],
            channel="audit")
    return _audit
