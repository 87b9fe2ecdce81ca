"""The committed CRD YAML (crds/ and the chart's crds/) is what the models generate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spatialjoin_contracts.crd_generate import job_crd, pool_crd, rendered_crds

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
CRD_DIRS = [ROOT / "crds", ROOT / "charts" / "spatialjoin-operator" / "crds"]


@pytest.mark.parametrize("name", sorted(rendered_crds()))
@pytest.mark.parametrize("directory", CRD_DIRS, ids=["crds", "chart"])
def test_committed_crd_matches_the_models(directory: Path, name: str) -> None:
    if not directory.is_dir():
        pytest.skip(f"{directory.relative_to(ROOT)} does not exist yet")
    path = directory / name
    assert path.is_file(), f"{path} is missing: run `spatialjoin crds generate`"
    assert path.read_text() == rendered_crds()[name], (
        f"{path.relative_to(ROOT)} differs from the models: run `spatialjoin crds generate`"
    )


def test_generation_is_deterministic() -> None:
    assert rendered_crds() == rendered_crds()


def test_rendered_yaml_parses_back_to_the_crds() -> None:
    rendered = rendered_crds()
    assert yaml.safe_load(rendered["spatialjoinjobs.yaml"]) == job_crd()
    assert yaml.safe_load(rendered["workerpools.yaml"]) == pool_crd()
    for text in rendered.values():
        assert "&id" not in text and "*id" not in text  # no YAML anchors
