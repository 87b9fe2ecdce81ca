"""kopf handlers for SpatialJoinJobs."""

from . import kopf_setup  # noqa: F401  (shared startup settings)
