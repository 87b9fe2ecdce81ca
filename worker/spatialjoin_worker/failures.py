"""Which failures are worth retrying: a pure classification of exceptions."""

from __future__ import annotations

from enum import StrEnum

import psycopg
from psycopg import errors as pg_errors

from .memory import HeapCapExceeded


class FailureClass(StrEnum):
    TRANSIENT = "transient"
    """Connection loss, serialization failure, timeouts, S3 or broker hiccups: retry."""
    PERMANENT = "permanent"
    """A bad query, a missing table, the heap cap: retrying cannot help."""


_TRANSIENT_PG = (
    psycopg.OperationalError,
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.QueryCanceled,
    pg_errors.AdminShutdown,
    pg_errors.CannotConnectNow,
)


def classify(exc: BaseException) -> FailureClass:
    """TRANSIENT for errors another attempt may not meet; PERMANENT otherwise."""
    if isinstance(exc, HeapCapExceeded):
        return FailureClass.PERMANENT
    if isinstance(exc, _TRANSIENT_PG):
        return FailureClass.TRANSIENT
    if isinstance(exc, psycopg.Error):
        return FailureClass.PERMANENT
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
        return FailureClass.TRANSIENT  # pyarrow's S3 client raises OSError
    return FailureClass.PERMANENT
