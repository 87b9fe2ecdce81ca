"""Which result contract a task is written with."""

from __future__ import annotations

from spatialjoin_contracts.models import ContractVersion

# Oldest first: a rollback moves left.
_ORDER = (ContractVersion.V2_0, ContractVersion.V2_1)


def effective_contract(requested: ContractVersion,
                       pool_active: ContractVersion | None) -> ContractVersion:
    """The job's contract, unless the pool rolled back to an older one (P1)."""
    if pool_active is None:
        return requested
    return min(requested, pool_active, key=_ORDER.index)
