"""docs/crd-reference.md is generated from the models; a stale copy fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from spatialjoin_contracts.crd_reference import render_reference

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[3] / "docs" / "crd-reference.md"


def test_committed_reference_matches_the_models() -> None:
    assert DOC.read_text() == render_reference(), "run `spatialjoin crds docs` and commit"


def test_reference_names_every_top_level_spec_field() -> None:
    text = render_reference()
    for field in ("spec.traceId", "spec.sla.deadlineSeconds", "spec.partitionMap[].bbox",
                  "spec.escalation.p3.concurrency", "status.phase"):
        assert f"`{field}`" in text, field
