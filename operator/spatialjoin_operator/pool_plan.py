"""The lag-weighted assignment plan: which partitions should not share a worker.

Pure. Longest-processing-time-first greedy: partitions in descending lag go
to the least loaded worker (lowest index on ties), which gives every heavy
partition a worker of its own before light ones are paired up. Kafka's
assignor in the workers does not follow it; it is advice in status for the
people (and tools) looking at a lagging pool, and it explains the replica count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

MAX_DESCRIPTION: Final = 1500


@dataclass(frozen=True)
class WorkerAssignment:
    """One worker's share of the plan."""

    worker: int
    partitions: tuple[str, ...]
    lag: int

    @property
    def isolated(self) -> bool:
        """A lagging partition that should not share its worker."""
        return len(self.partitions) == 1 and self.lag > 0

    def to_k8s(self) -> dict[str, Any]:
        return {"worker": self.worker, "partitions": list(self.partitions), "lag": self.lag}


def assignment_plan(lags: Mapping[str, int], workers: int) -> tuple[WorkerAssignment, ...]:
    """Partitions spread over ``workers`` so that the largest lag any worker carries is small."""
    if workers <= 0 or not lags:
        return ()
    loads = [0] * workers
    shares: list[list[str]] = [[] for _ in range(workers)]
    for name, lag in sorted(lags.items(), key=lambda item: (-item[1], item[0])):
        target = min(range(workers), key=lambda w: (loads[w], len(shares[w]), w))
        loads[target] += max(lag, 0)
        shares[target].append(name)
    return tuple(WorkerAssignment(w, tuple(shares[w]), loads[w]) for w in range(workers)
                 if shares[w])


def isolated_partitions(plan: Sequence[WorkerAssignment]) -> list[str]:
    """Partitions the plan gives a worker of their own because of their lag."""
    return [a.partitions[0] for a in plan if a.isolated]


def describe_plan(plan: Sequence[WorkerAssignment]) -> str:
    """``w0: p03 (5000) | w1: p07 (3000) | w2: p01+p02 (2000)``, cut to a readable length."""
    text = " | ".join(f"w{a.worker}: {'+'.join(a.partitions)} ({a.lag})" for a in plan)
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 3] + "..."
