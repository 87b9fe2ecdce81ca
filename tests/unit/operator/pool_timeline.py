"""Drive pool_policy.decide through a timeline, feeding each decision back as the next history.

What the handler does between rounds (status conditions, status.escalations,
the Deployment's effective values) is reproduced here without a cluster,
so tests can say "at t=40 s the lag clears" and look at what was done when.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from spatialjoin_contracts import samples
from spatialjoin_contracts.models import WorkerPoolSpec
from spatialjoin_operator import escalation
from spatialjoin_operator.pool_policy import Decision, Effective, History, Signals, decide

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def pool(**overrides: Any) -> WorkerPoolSpec:
    return WorkerPoolSpec.model_validate(samples.pool_spec(**overrides))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def lag(total: int, partitions: int = 1, **extra: Any) -> Signals:
    """``total`` spread evenly over the first ``partitions`` of the grid map (p00...)."""
    share = {f"p{i:02d}": total // partitions for i in range(partitions)}
    return Signals(lag_total=total, partition_lag=share, latency_s=0.0,
                   materialization_failures=0, schema_deviations=0, **extra)


def quiet(**extra: Any) -> Signals:
    return lag(0, **extra)


@dataclass
class Timeline:
    spec: WorkerPoolSpec
    history: History = field(default_factory=History)
    ids: int = 0
    log: list[tuple[float, Decision]] = field(default_factory=list)

    def step(self, seconds: float, signals: Signals,
             annotations: Mapping[str, str] | None = None) -> Decision:
        now = at(seconds)
        if annotations is not None:
            self.history = History(self.history.effective, self.history.conditions,
                                   self.history.escalations, dict(annotations))
        decision = decide(self.spec, signals, self.history, now, generation=1)
        records = escalation.records_for(decision.actions, namespace="ns", pool="p", now=now,
                                         new_id=self._new_id)
        self.history = History(effective=decision.effective, conditions=decision.conditions,
                               escalations=escalation.history(self.history.escalations,
                                                              records),
                               annotations=self.history.annotations)
        self.log.append((seconds, decision))
        return decision

    def run(self, steps: Iterable[tuple[float, Signals]]) -> list[Decision]:
        return [self.step(t, s) for t, s in steps]

    def _new_id(self) -> str:
        self.ids += 1
        return f"incident-{self.ids}"

    def actions(self) -> list[tuple[float, str, str]]:
        """(time, severity, action) of everything done so far."""
        return [(t, a.severity.value, a.action.value) for t, d in self.log for a in d.actions]

    def replicas(self) -> list[int]:
        return [d.effective.replicas for _t, d in self.log]


def effective(replicas: int = 1, concurrency: int = 8, contract: str = "v2.1") -> Effective:
    from spatialjoin_contracts.models import ContractVersion

    return Effective(replicas, concurrency, ContractVersion(contract))
