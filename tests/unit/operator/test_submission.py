"""The submission API's pure decisions: auth, trace id, body, wait cap, names, idempotency."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from spatialjoin_contracts import samples
from spatialjoin_contracts.models import SpatialJoinJobSpec
from spatialjoin_contracts.models.common import DNS_SUBDOMAIN_PATTERN
from spatialjoin_operator import submission
from spatialjoin_operator.submission import Existing, Problem

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("header", "tokens", "ok"), [
    ("Bearer s3cret", ["s3cret"], True),
    ("bearer s3cret", ["old", "s3cret"], True),
    ("Bearer  s3cret ", ["s3cret"], True),
    ("Bearer wrong", ["s3cret"], False),
    ("Bearer s3cre", ["s3cret"], False),
    ("Basic s3cret", ["s3cret"], False),
    ("s3cret", ["s3cret"], False),
    ("Bearer ", ["s3cret"], False),
    (None, ["s3cret"], False),
    ("Bearer s3cret", [], False),
])
def test_authorized(header: str | None, tokens: list[str], ok: bool) -> None:
    assert submission.authorized(header, tokens) is ok


def test_parse_tokens_allows_rotation_lists() -> None:
    assert submission.parse_tokens("new\n\n# old one until Friday\nold\n") == ["new", "old"]


@pytest.mark.parametrize(("value", "field"), [
    (None, "X-Request-Trace-ID"), ("", "X-Request-Trace-ID"), ("-leading", "X-Request-Trace-ID"),
    ("has space", "X-Request-Trace-ID"), ("x" * 129, "X-Request-Trace-ID"),
])
def test_bad_trace_ids_name_the_header(value: str | None, field: str) -> None:
    problem = submission.check_trace_id(value)
    assert isinstance(problem, Problem) and problem.status == 400
    assert problem.errors[0].field == field and field in problem.detail


@pytest.mark.parametrize("value", ["a", "req-2025.01_01", "A" * 128])
def test_good_trace_ids(value: str) -> None:
    assert submission.check_trace_id(value) == value


def body(**overrides: Any) -> bytes:
    return json.dumps(samples.job_spec(**overrides)).encode()


@pytest.mark.parametrize(("raw", "field"), [
    (b"{not json", "body"),
    (b"[1, 2]", "body"),
    (b"", "body"),
    (json.dumps({"source": {}}).encode(), "spec.workerPoolRef"),
    (body(output={"uriPrefix": "http://nope"}), "spec.output.uriPrefix"),
    (body(bbox={"minLon": 10, "minLat": 0, "maxLon": 5, "maxLat": 1}), "spec.bbox.minLon"),
    (body(retry={"initialDelaySeconds": 60, "maxDelaySeconds": 30}),
     "spec.retry.initialDelaySeconds"),
    (body(traceId="another"), "spec.traceId"),
    (body(unknownField=1), "spec.unknownField"),
])
def test_malformed_bodies_name_the_field(raw: bytes, field: str) -> None:
    problem = submission.parse_submission(raw, "trace-1")
    assert isinstance(problem, Problem) and problem.status == 400
    assert field in [e.field for e in problem.errors]
    assert field in problem.detail or field in json.dumps(problem.to_json())


def test_a_valid_body_gets_the_header_trace_id() -> None:
    spec = submission.parse_submission(body(), "trace-1")
    assert isinstance(spec, SpatialJoinJobSpec) and spec.trace_id == "trace-1"
    same = submission.parse_submission(body(traceId="trace-1"), "trace-1")
    assert same == spec


@pytest.mark.parametrize(("raw", "cap", "expected"), [
    (None, 30.0, 0.0), ("0", 30.0, 0.0), ("5", 30.0, 5.0), ("2.5", 30.0, 2.5),
    ("3600", 30.0, 30.0), ("inf", 30.0, 30.0), ("10", 0.0, 0.0),
])
def test_wait_is_capped(raw: str | None, cap: float, expected: float) -> None:
    assert submission.wait_seconds(raw, cap) == expected


@pytest.mark.parametrize("raw", ["-1", "soon", "nan", ""])
def test_bad_wait_names_the_parameter(raw: str) -> None:
    problem = submission.wait_seconds(raw, 30.0)
    assert isinstance(problem, Problem) and problem.status == 400
    assert problem.errors[0].field == "wait"


@pytest.mark.parametrize("trace", ["abc", "ABC", "a.b_c-d", "X" * 128, "9", "Trace.2025.01.01"])
def test_job_names_are_valid_distinct_and_stable(trace: str) -> None:
    name = submission.job_name(trace)
    assert re.fullmatch(DNS_SUBDOMAIN_PATTERN, name) and len(name) <= 63
    assert "." not in name  # a DNS-1123 label: usable in labels and Events too
    assert submission.job_name(trace) == name


def test_case_and_punctuation_do_not_collide() -> None:
    names = {submission.job_name(t) for t in ("abc", "ABC", "a.bc", "a-bc", "a_bc")}
    assert len(names) == 5


def manifest(trace: str = "trace-1", **overrides: Any) -> dict[str, Any]:
    spec = submission.parse_submission(body(**overrides), trace)
    assert isinstance(spec, SpatialJoinJobSpec)
    return submission.job_manifest(spec, trace, "jobs")


def test_manifest_carries_trace_name_label_and_spec() -> None:
    made = manifest()
    assert made["metadata"]["name"] == submission.job_name("trace-1")
    assert made["metadata"]["namespace"] == "jobs"
    assert made["metadata"]["annotations"] == {"spatialjoin.io/trace-id": "trace-1"}
    assert made["metadata"]["labels"] == {"spatialjoin.io/submitted-by": "submission-api"}
    assert made["spec"]["traceId"] == "trace-1" and made["kind"] == "SpatialJoinJob"


def spec_of(**overrides: Any) -> SpatialJoinJobSpec:
    spec = submission.parse_submission(body(**overrides), "trace-1")
    assert isinstance(spec, SpatialJoinJobSpec)
    return spec


@pytest.mark.parametrize(("existing", "requested", "outcome"), [
    (manifest(), spec_of(), Existing.REPLAY),
    # What the apiserver stores has the defaults filled in: still the same join.
    ({**manifest(), "spec": {**manifest()["spec"], "sla": {"deadlineSeconds": 90},
                             "suspend": False}}, spec_of(), Existing.REPLAY),
    # Knobs a user may change later (suspend, sla) do not make it another join.
    ({**manifest(), "spec": {**manifest()["spec"], "suspend": True}}, spec_of(), Existing.REPLAY),
    (manifest(), spec_of(partitions=["p00"]), Existing.MISMATCH),
    (manifest(), spec_of(output={"uriPrefix": "s3://elsewhere/x"}), Existing.MISMATCH),
    (manifest("other"), spec_of(), Existing.FOREIGN),
])
def test_compare_existing(existing: dict[str, Any], requested: SpatialJoinJobSpec,
                          outcome: Existing) -> None:
    assert submission.compare_existing(existing, "trace-1", requested) is outcome


def test_existing_problems() -> None:
    mismatch = submission.existing_problem(Existing.MISMATCH, "trace-1", manifest())
    assert mismatch.status == 422 and "different join" in mismatch.detail
    assert submission.existing_problem(Existing.FOREIGN, "trace-1", manifest()).status == 409


def test_job_view_reports_status_and_results() -> None:
    obj = {**manifest(), "metadata": {**manifest()["metadata"], "uid": "u-1"},
           "status": {"phase": "Succeeded", "progress": "2/2", "rows": 7, "traceId": "trace-1",
                      "results": [{"partition": "p00", "uri": "s3://b/t/p00.parquet", "rows": 7,
                                   "sha256": "a" * 64}],
                      "conditions": [{"type": "Complete", "status": "True", "reason": "Done",
                                      "message": "m", "lastTransitionTime": "x"}]}}
    view = submission.job_view(obj)
    assert view["done"] is True and view["phase"] == "Succeeded"
    assert view["location"] == "/v1/joins/trace-1" and view["job"]["uid"] == "u-1"
    assert view["results"][0]["partition"] == "p00" and view["rows"] == 7
    assert view["conditions"] == [{"type": "Complete", "status": "True", "reason": "Done",
                                   "message": "m"}]
    fresh = submission.job_view(manifest())
    assert fresh["phase"] == "Pending" and fresh["done"] is False and fresh["results"] == []


def test_openapi_document_describes_both_routes_and_the_cap() -> None:
    doc = submission.openapi_document(12.0)
    assert doc["openapi"].startswith("3.1")
    post = doc["paths"]["/v1/joins"]["post"]
    assert {"202", "400", "401", "422"} <= set(post["responses"])
    assert post["parameters"][0]["name"] == "X-Request-Trace-ID"
    get = doc["paths"]["/v1/joins/{traceId}"]["get"]
    assert "12s" in get["parameters"][1]["description"]
    assert "SpatialJoinJobSpec" in doc["components"]["schemas"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    text = json.dumps(doc)
    assert "$defs" not in text and "#/components/schemas/JoinSource" in text


def test_location_quotes_the_trace_id() -> None:
    assert submission.location("a.b_c-1") == "/v1/joins/a.b_c-1"
