"""Building blocks shared by both CRDs: the camelCase base model, conditions, bbox, enums.

Field docstrings become the CRD's ``description`` (``use_attribute_docstrings``),
so what ``kubectl explain`` shows is written next to the field it documents.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# An SQL identifier, optionally schema-qualified: what may be spliced into a query
# template.  Anything else (quotes, spaces, semicolons) is refused by the schema.
SQL_IDENTIFIER_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
SQL_TABLE_PATTERN: Final = r"^([A-Za-z_][A-Za-z0-9_]{0,62}\.)?[A-Za-z_][A-Za-z0-9_]{0,62}$"
# A DNS-1123 label: partition names end up in object keys, labels and metric labels.
DNS_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A DNS-1123 subdomain: the names of Kubernetes objects (WorkerPools, Secrets).
DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# The Kubernetes metav1.Condition rules, copied so that conditions look the same everywhere.
CONDITION_TYPE_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN: Final = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

SqlIdentifier = Annotated[str, Field(pattern=SQL_IDENTIFIER_PATTERN, max_length=63)]
SqlTable = Annotated[str, Field(pattern=SQL_TABLE_PATTERN, max_length=127)]
PartitionName = Annotated[str, Field(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=63)]


class CamelModel(BaseModel):
    """Base of every contract model: camelCase JSON, snake_case Python, immutable, strict keys."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        use_enum_values=False,
    )

    def to_k8s(self) -> dict[str, Any]:
        """The camelCase JSON form with absent optionals left out, as sent to the apiserver."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ContractVersion(StrEnum):
    """Result schema contract. v2.0 is a strict subset of v2.1 (see result_schema)."""

    V2_1 = "v2.1"
    V2_0 = "v2.0"


class Compression(StrEnum):
    """Parquet compression codec of the result files."""

    ZSTD = "zstd"
    SNAPPY = "snappy"


class Severity(StrEnum):
    """Incident severity; P1 is the most severe. Absent means no open incident."""

    P1 = "P1"
    P2 = "P2"
    P3 = "P3"


class ConditionStatus(StrEnum):
    """The Kubernetes condition status values."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(CamelModel):
    """One observation of the object's state, following the Kubernetes metav1.Condition shape."""

    type: str = Field(pattern=CONDITION_TYPE_PATTERN, max_length=316)
    """Type of condition in CamelCase, for example Complete or Degraded."""
    status: ConditionStatus
    """Status of the condition: True, False or Unknown."""
    reason: str = Field(pattern=CONDITION_REASON_PATTERN, min_length=1, max_length=1024)
    """Programmatic CamelCase identifier of the reason for the last transition."""
    message: str = Field(max_length=32768)
    """Human-readable detail about the last transition (may be empty); names the field when a
    spec is wrong."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the condition was set from."""
    last_transition_time: datetime
    """When the condition last changed status (RFC 3339)."""


class BBox(CamelModel):
    """An axis-aligned bounding box in EPSG:4326 degrees (longitude, latitude).

    Boxes crossing the antimeridian are not supported: minLon must be less than maxLon.
    """

    min_lon: float = Field(ge=-180, le=180)
    """Western edge, degrees longitude in [-180, 180]."""
    min_lat: float = Field(ge=-90, le=90)
    """Southern edge, degrees latitude in [-90, 90]."""
    max_lon: float = Field(ge=-180, le=180)
    """Eastern edge, degrees longitude in [-180, 180]; greater than minLon."""
    max_lat: float = Field(ge=-90, le=90)
    """Northern edge, degrees latitude in [-90, 90]; greater than minLat."""

    def as_tuple(self) -> tuple[float, float, float, float]:
        """(minLon, minLat, maxLon, maxLat), the argument order of ST_MakeEnvelope."""
        return (self.min_lon, self.min_lat, self.max_lon, self.max_lat)

    def intersects(self, other: BBox) -> bool:
        """True when the two boxes share at least a boundary point."""
        return not (
            other.min_lon > self.max_lon
            or other.max_lon < self.min_lon
            or other.min_lat > self.max_lat
            or other.max_lat < self.min_lat
        )

    def intersection(self, other: BBox) -> BBox | None:
        """The overlapping box, or None when the boxes are disjoint."""
        if not self.intersects(other):
            return None
        return BBox(
            min_lon=max(self.min_lon, other.min_lon),
            min_lat=max(self.min_lat, other.min_lat),
            max_lon=min(self.max_lon, other.max_lon),
            max_lat=min(self.max_lat, other.max_lat),
        )


class LocalObjectReference(CamelModel):
    """A reference to an object in the same namespace."""

    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253)
    """Name of the referenced object."""
