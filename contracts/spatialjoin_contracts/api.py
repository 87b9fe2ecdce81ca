"""Names of the Kubernetes API this project defines: group, version, kinds, plurals."""

from __future__ import annotations

from typing import Final

GROUP: Final = "spatialjoin.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CATEGORY: Final = "spatialjoin"

JOB_KIND: Final = "SpatialJoinJob"
JOB_PLURAL: Final = "spatialjoinjobs"
JOB_SINGULAR: Final = "spatialjoinjob"
JOB_SHORT_NAMES: Final = ("sjj", "sjob")

POOL_KIND: Final = "WorkerPool"
POOL_PLURAL: Final = "workerpools"
POOL_SINGULAR: Final = "workerpool"
POOL_SHORT_NAMES: Final = ("wp", "wpool")

# Written by the operator on a SpatialJoinJob once its tasks are queued: the
# spec as queued (JSON), which retries re-publish and diagnosis inspects.
QUEUED_SPEC_ANNOTATION: Final = "spatialjoin.io/queued-spec"

# Set on a WorkerPool by `spatialjoin restore` while it rebuilds the results
# table (any non-empty value): the pool scales its workers to zero and no job
# of the pool queues or re-publishes anything until the annotation is gone.
PAUSED_FOR_RESTORE_ANNOTATION: Final = "spatialjoin.io/paused-for-restore"
