"""Which failures are worth retrying: a pure classification of exceptions.

Database errors are told apart by PEP 249's exception hierarchy, which every
driver follows (psycopg's serialization failures, deadlocks, cancelled
statements, shutdowns and lost connections are all OperationalErrors), so
the decision needs no driver import.
"""

from __future__ import annotations

from enum import StrEnum

from .memory import HeapCapExceeded


class FailureClass(StrEnum):
    TRANSIENT = "transient"
    """Connection loss, serialization failure, timeouts, S3 or broker hiccups: retry."""
    PERMANENT = "permanent"
    """A bad query, a missing table, the heap cap: retrying cannot help."""


def _pep249_kinds(exc: BaseException) -> set[str]:
    return {kind.__name__ for kind in type(exc).__mro__}


def classify(exc: BaseException) -> FailureClass:
    """TRANSIENT for errors another attempt may not meet; PERMANENT otherwise."""
    if isinstance(exc, HeapCapExceeded):
        return FailureClass.PERMANENT
    kinds = _pep249_kinds(exc)
    if "OperationalError" in kinds:
        return FailureClass.TRANSIENT
    if kinds & {"DatabaseError", "InterfaceError"}:
        return FailureClass.PERMANENT
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
        return FailureClass.TRANSIENT  # pyarrow's S3 client raises OSError
    return FailureClass.PERMANENT
