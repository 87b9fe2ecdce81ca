"""kopf handlers for WorkerPools."""

from . import kopf_setup  # noqa: F401  (shared startup settings)
