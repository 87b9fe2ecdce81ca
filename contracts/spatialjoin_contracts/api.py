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
