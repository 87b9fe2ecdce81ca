"""Kubernetes-convention status conditions, as pure functions.

lastTransitionTime changes only when a condition's status flips; reason,
message and observedGeneration are refreshed on every write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

Condition = dict[str, Any]


def rfc3339(moment: datetime) -> str:
    """Kubernetes' timestamp format (second precision, Z)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime | None:
    """A Kubernetes timestamp (or a datetime) as a datetime; None when absent or empty."""
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    return datetime.fromisoformat(str(value))  # 3.11+ reads the trailing Z


def set_condition(conditions: Sequence[Mapping[str, Any]], *, type_: str, status: str,
                  reason: str, message: str, generation: int | None,
                  now: datetime) -> list[Condition]:
    """A new list with ``type_`` set; others are kept in order."""
    result: list[Condition] = []
    found = False
    for existing in conditions:
        if existing.get("type") != type_:
            result.append(dict(existing))
            continue
        found = True
        flipped = existing.get("status") != status
        result.append(_condition(type_, status, reason, message, generation,
                                 rfc3339(now) if flipped
                                 else existing.get("lastTransitionTime", rfc3339(now))))
    if not found:
        result.append(_condition(type_, status, reason, message, generation, rfc3339(now)))
    return result


def get_condition(conditions: Sequence[Mapping[str, Any]] | None,
                  type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def is_true(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> bool:
    found = get_condition(conditions, type_)
    return found is not None and found.get("status") == "True"


def _condition(type_: str, status: str, reason: str, message: str, generation: int | None,
               transition: str) -> Condition:
    condition: Condition = {"type": type_, "status": status, "reason": reason,
                            "message": message or reason, "lastTransitionTime": transition}
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition
