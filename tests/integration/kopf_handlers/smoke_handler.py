"""A ten-line kopf operator for the Kubernetes smoke test: it patches status on create."""

import os

import kopf

GROUP = os.environ["SMOKE_GROUP"]


@kopf.on.create(GROUP, "v1", "smokes")
def mark_seen(spec: kopf.Spec, patch: kopf.Patch, **_: object) -> None:
    patch.status["seen"] = f"hello {spec.get('name', '?')}"
