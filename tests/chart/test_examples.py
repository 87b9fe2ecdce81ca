"""examples/: valid against the CRD models and the chart, with fake credentials and hosts only."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from spatialjoin_contracts.models import SpatialJoinJobSpec, WorkerPoolSpec
from spatialjoin_contracts.validation import check_job_spec, check_pool_spec, validate_job

from .helm import CHART, EXAMPLES, Manifest, container, one, template

pytestmark = pytest.mark.unit

FAKE_HOST = re.compile(r"^([a-z0-9-]+\.)*example\.(com|internal)$")


def load(name: str) -> list[Manifest]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def test_the_examples_folder_has_what_the_issue_lists() -> None:
    assert {p.name for p in EXAMPLES.glob("*.yaml")} >= {
        "workerpool.yaml", "spatialjoinjob.yaml", "argocd-application.yaml",
        "flux-helmrelease.yaml", "secrets.yaml"}


def test_workerpool_and_job_are_valid_and_fit_together() -> None:
    (pool,) = load("workerpool.yaml")
    (job,) = load("spatialjoinjob.yaml")
    pool_spec, pool_errors = check_pool_spec(pool["spec"])
    job_spec, job_errors = check_job_spec(job["spec"])
    assert not pool_errors and not job_errors
    assert isinstance(pool_spec, WorkerPoolSpec) and isinstance(job_spec, SpatialJoinJobSpec)
    assert validate_job(job_spec, pool_spec) == []
    assert job["spec"]["workerPoolRef"]["name"] == pool["metadata"]["name"]
    assert job["metadata"]["namespace"] == pool["metadata"]["namespace"]
    # The seed's numbers are spelled out, equal to the CRD's defaults.
    defaults = WorkerPoolSpec.model_validate({**pool["spec"], "escalation": {}, "broker": {
        "bootstrapServers": pool["spec"]["broker"]["bootstrapServers"]}})
    assert pool_spec.escalation == defaults.escalation
    assert pool_spec.broker.model_dump() == defaults.broker.model_dump()
    assert (pool_spec.concurrency, pool_spec.max_heap_mb) == (8, 4096)
    assert job_spec.sla.deadline_seconds == 90 and job_spec.retry.max_retries == 3


def test_secrets_are_the_ones_the_pool_names_with_fake_values() -> None:
    (pool,) = load("workerpool.yaml")
    secrets = {s["metadata"]["name"]: s for s in load("secrets.yaml")}
    assert set(secrets) == {pool["spec"]["database"]["urlSecretRef"]["name"],
                            pool["spec"]["storage"]["secretRef"]["name"]}
    database = secrets[pool["spec"]["database"]["urlSecretRef"]["name"]]
    assert pool["spec"]["database"]["urlSecretRef"]["key"] in database["stringData"]
    storage = secrets[pool["spec"]["storage"]["secretRef"]["name"]]
    assert set(storage["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    for secret in secrets.values():
        kubernetes_validate.validate(secret, kubernetes_validate.latest_version(), strict=True)
        for value in secret["stringData"].values():
            assert "EXAMPLE" in value or "CHANGE-ME" in value, value


def _hosts(text: str) -> set[str]:
    """Hosts of http(s) and libpq URLs (an s3:// URI names a bucket, not a host)."""
    return set(re.findall(r"(?:https?|postgresql)://(?:[^@/\s]*@)?([a-z0-9.-]+)", text))


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_examples_name_only_placeholder_hosts(name: str) -> None:
    text = (EXAMPLES / name).read_text()
    for host in _hosts(text):
        if host == "kubernetes.default.svc":
            continue  # Argo CD's in-cluster destination
        assert FAKE_HOST.match(host), f"{name}: {host} is not an example host"


def _schema() -> dict[str, Any]:
    return dict(json.loads((CHART / "values.schema.json").read_text()))


def test_argocd_applications(tmp_path: Path) -> None:
    documents = load("argocd-application.yaml")
    assert {d["kind"] for d in documents} == {"Application"}
    operator, pools = documents
    source = operator["spec"]["source"]
    assert (CHART.parents[1] / source["path"]).resolve() == CHART
    values = source["helm"]["valuesObject"]
    jsonschema.validate(values, _schema())
    manifests = template(values, tmp_path, release=source["helm"]["releaseName"],
                         namespace=operator["spec"]["destination"]["namespace"])
    assert one(manifests, "Role")["metadata"]["namespace"] == "spatialjoin"
    assert one(manifests, "PrometheusRule") and one(manifests, "KopfPeering")
    assert "ServerSideApply=true" in operator["spec"]["syncPolicy"]["syncOptions"]
    assert pools["spec"]["destination"]["namespace"] == "spatialjoin"
    assert "SkipDryRunOnMissingResource=true" in pools["spec"]["syncPolicy"]["syncOptions"]


def test_flux_helmrelease(tmp_path: Path) -> None:
    documents = {(d["kind"], d["metadata"]["name"]): d for d in load("flux-helmrelease.yaml")}
    release = documents[("HelmRelease", "spatialjoin")]
    chart = release["spec"]["chart"]["spec"]
    assert (CHART.parents[1] / chart["chart"]).resolve() == CHART
    source = chart["sourceRef"]
    assert (source["kind"], source["name"]) in documents
    assert release["spec"]["install"]["crds"] == release["spec"]["upgrade"]["crds"] == \
        "CreateReplace"
    values = release["spec"]["values"]
    jsonschema.validate(values, _schema())
    manifests = template(values, tmp_path, release="spatialjoin",
                         namespace=release["metadata"]["namespace"])
    assert one(manifests, "Deployment")["spec"]["replicas"] == 2
    assert '--priority="$RANDOM"' in container(manifests)["command"][2]
    pools = documents[("Kustomization", "spatialjoin-pools")]
    assert (pools["spec"]["sourceRef"]["kind"], pools["spec"]["sourceRef"]["name"]) in documents
