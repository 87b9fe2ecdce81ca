"""The submission API's decisions, as pure functions: auth, validation, idempotency, wait cap.

The HTTP layer (submission_api.py) only moves bytes and calls the apiserver;
everything it decides is decided here, so it is tested without a server.

Idempotency: the job's name is derived from the X-Request-Trace-ID
(:func:`job_name`), so two concurrent POSTs of one trace id race on one
name and the apiserver lets exactly one create win (the other gets 409 and
returns the winner). A repeated POST with the same join gets the existing
job (202); the same trace id with a *different* join is refused with 422,
as the IETF Idempotency-Key draft recommends: a key names one request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from spatialjoin_contracts import api
from spatialjoin_contracts.models import SpatialJoinJobSpec
from spatialjoin_contracts.models.job import TRACE_ID_PATTERN, JobPhase
from spatialjoin_contracts.validation import FieldError, check_job_spec

TRACE_HEADER: Final = "X-Request-Trace-ID"
TRACE_ANNOTATION: Final = "spatialjoin.io/trace-id"
SUBMITTED_LABEL: Final = "spatialjoin.io/submitted-by"
SUBMITTED_VALUE: Final = "submission-api"
JOINS_PATH: Final = "/v1/joins"
FINISHED_PHASES: Final = frozenset({JobPhase.SUCCEEDED.value, JobPhase.FAILED.value})
# Fields that define the join; the same trace id must carry the same ones.
_JOIN_FIELDS: Final = ("worker_pool_ref", "source", "partitions", "bbox", "output")
_NAME_PREFIX: Final = "sj-"
_NAME_HASH: Final = 10


class ApiSettings(BaseSettings):
    """SPATIALJOIN_API_*: the chart sets these when the API is enabled."""

    model_config = SettingsConfigDict(env_prefix="SPATIALJOIN_API_", extra="ignore")

    enabled: bool = False
    addr: str = "127.0.0.1"
    port: int = Field(default=8088, ge=0, le=65535)
    namespace: str = "default"
    """Namespace the jobs are created in."""
    token_file: Path | None = None
    """File with the bearer token(s), one per line (a mounted Secret; re-read on change)."""
    token_secret: str | None = None
    """Secret holding the token(s), as NAME or NAMESPACE/NAME (default namespace: namespace)."""
    token_secret_key: str = "token"
    token_refresh_s: float = Field(default=30.0, gt=0)
    max_wait_s: float = Field(default=30.0, ge=0, le=300)
    """Strict cap of ?wait=N: no request is held longer."""
    poll_interval_s: float = Field(default=0.5, gt=0, le=10)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    kube_threads: int = Field(default=16, ge=1, le=128)


# --- problems (RFC 9457 application/problem+json) ---------------------------------------


@dataclass(frozen=True)
class Problem:
    status: int
    title: str
    detail: str
    errors: tuple[FieldError, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": "about:blank", "title": self.title,
                                "status": self.status, "detail": self.detail}
        if self.errors:
            body["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        return body


def _bad_request(field_path: str, message: str) -> Problem:
    error = FieldError(field=field_path, message=f"{field_path}: {message}")
    return Problem(400, "Bad Request", error.message, (error,))


UNAUTHORIZED: Final = Problem(
    401, "Unauthorized", "a valid bearer token is required (Authorization: Bearer TOKEN)",
    headers={"WWW-Authenticate": 'Bearer realm="spatialjoin"'})


# --- auth -------------------------------------------------------------------------------


def parse_tokens(text: str) -> list[str]:
    """Tokens from a file or Secret value: one per line, blank lines and #comments ignored."""
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def authorized(header: str | None, tokens: Sequence[str]) -> bool:
    """``Authorization: Bearer TOKEN`` with TOKEN one of ``tokens`` (constant-time compare)."""
    if not header or not tokens:
        return False
    scheme, _, presented = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return False
    given = presented.strip().encode()
    # Compare against every token, always, so timing says nothing about which one matched.
    return sum(hmac.compare_digest(given, t.encode()) for t in tokens) > 0


# --- the request ------------------------------------------------------------------------


_TRACE_RE: Final = re.compile(TRACE_ID_PATTERN)


def check_trace_id(value: str | None) -> str | Problem:
    if value is None or not value.strip():
        return _bad_request(TRACE_HEADER, "header is required: the job's idempotency key")
    if not _TRACE_RE.fullmatch(value):
        return _bad_request(TRACE_HEADER, f"{value!r} must match {TRACE_ID_PATTERN} "
                                          "(1-128 letters, digits, '.', '_', '-')")
    return value


def parse_submission(raw: bytes, trace_id: str) -> SpatialJoinJobSpec | Problem:
    """The body (a SpatialJoinJob spec, camelCase JSON), validated, with traceId set."""
    try:
        document = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        return _bad_request("body", f"is not valid JSON: {exc}")
    if not isinstance(document, dict):
        return _bad_request("body", "must be a JSON object: a SpatialJoinJob spec "
                                    "(workerPoolRef, source, output, …)")
    given = document.get("traceId")
    if given is not None and given != trace_id:
        return _bad_request("spec.traceId", f"{given!r} must equal the {TRACE_HEADER} header "
                                            f"({trace_id!r}) or be absent")
    document["traceId"] = trace_id
    spec, errors = check_job_spec(document)
    if spec is None or errors:
        first = errors[0].message if errors else "invalid"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return Problem(400, "Bad Request", f"{first}{more}", tuple(errors))
    return spec


def wait_seconds(raw: str | None, cap: float) -> float | Problem:
    """``?wait=N`` as seconds, capped at ``cap``; absent means do not wait."""
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        return _bad_request("wait", f"{raw!r} is not a number of seconds")
    if math.isnan(value) or value < 0:
        return _bad_request("wait", f"{raw!r} must be zero or more seconds")
    return min(value, cap)


# --- the job ----------------------------------------------------------------------------


def job_name(trace_id: str) -> str:
    """A DNS-1123 name that only this trace id maps to: ``sj-<readable>-<hash>``.

    The readable part is the trace id lowercased with other characters turned
    into '-'; the hash of the exact trace id keeps ``ABC`` and ``abc`` apart.
    """
    digest = hashlib.sha256(trace_id.encode()).hexdigest()[:_NAME_HASH]
    readable = re.sub(r"[^a-z0-9-]+", "-", trace_id.lower()).strip("-")[:40].strip("-")
    return f"{_NAME_PREFIX}{readable}-{digest}" if readable else f"{_NAME_PREFIX}{digest}"


def job_manifest(spec: SpatialJoinJobSpec, trace_id: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION, "kind": api.JOB_KIND,
        "metadata": {
            "name": job_name(trace_id), "namespace": namespace,
            "labels": {SUBMITTED_LABEL: SUBMITTED_VALUE},
            "annotations": {TRACE_ANNOTATION: trace_id},
        },
        "spec": spec.to_k8s(),
    }


class Existing(StrEnum):
    REPLAY = "replay"
    """Same trace id, same join: return the existing job."""
    MISMATCH = "mismatch"
    """Same trace id, another join: 422."""
    FOREIGN = "foreign"
    """The name is taken by a job of another trace id: 409."""


def trace_of(body: Mapping[str, Any]) -> str | None:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    return (meta.get("annotations") or {}).get(TRACE_ANNOTATION) or spec.get("traceId")


def compare_existing(body: Mapping[str, Any], trace_id: str,
                     requested: SpatialJoinJobSpec) -> Existing:
    if trace_of(body) != trace_id:
        return Existing.FOREIGN
    try:
        current = SpatialJoinJobSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return Existing.MISMATCH
    same = all(getattr(current, name) == getattr(requested, name) for name in _JOIN_FIELDS)
    return Existing.REPLAY if same else Existing.MISMATCH


def existing_problem(outcome: Existing, trace_id: str, body: Mapping[str, Any]) -> Problem:
    name = (body.get("metadata") or {}).get("name")
    if outcome is Existing.MISMATCH:
        return Problem(422, "Unprocessable Content",
                       f"{TRACE_HEADER} {trace_id!r} already names job {name!r} with a different "
                       "join (workerPoolRef, source, partitions, bbox or output); use a new "
                       "trace id for a new join")
    return Problem(409, "Conflict", f"job name {name!r} is taken by another trace id")


def location(trace_id: str) -> str:
    return f"{JOINS_PATH}/{quote(trace_id, safe='')}"


def finished(body: Mapping[str, Any]) -> bool:
    return (body.get("status") or {}).get("phase") in FINISHED_PHASES


def job_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a client sees of a job: identity, phase, progress, conditions, result objects."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    trace = trace_of(body) or status.get("traceId") or meta.get("uid")
    view: dict[str, Any] = {
        "traceId": trace, "location": location(str(trace)),
        "job": {"namespace": meta.get("namespace"), "name": meta.get("name"),
                "uid": meta.get("uid"), "created": meta.get("creationTimestamp")},
        "phase": status.get("phase") or JobPhase.PENDING.value,
        "done": finished(body),
    }
    for key in ("progress", "partitionsTotal", "partitionsDone", "partitionsFailed", "rows",
                "bytes", "slaState", "deadlineTime", "startTime", "completionTime",
                "activeContract", "severity"):
        if status.get(key) is not None:
            view[key] = status[key]
    view["results"] = list(status.get("results") or [])
    view["conditions"] = [{k: c.get(k) for k in ("type", "status", "reason", "message")}
                          for c in status.get("conditions") or []]
    return view


# --- the OpenAPI document ---------------------------------------------------------------


def openapi_document(max_wait_s: float) -> dict[str, Any]:
    """OpenAPI 3.1 of the API; the job body schema is the CRD's own (pydantic)."""
    spec_schema = SpatialJoinJobSpec.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(spec_schema.pop("$defs", {}))
    schemas["SpatialJoinJobSpec"] = spec_schema
    schemas["Problem"] = {
        "type": "object", "required": ["title", "status", "detail"],
        "properties": {
            "type": {"type": "string"}, "title": {"type": "string"},
            "status": {"type": "integer"}, "detail": {"type": "string"},
            "errors": {"type": "array", "items": {
                "type": "object", "required": ["field", "message"],
                "properties": {"field": {"type": "string", "examples": ["spec.source"]},
                               "message": {"type": "string"}}}}}}
    schemas["Job"] = {
        "type": "object", "required": ["traceId", "location", "job", "phase", "done"],
        "properties": {
            "traceId": {"type": "string"}, "location": {"type": "string"},
            "job": {"type": "object", "properties": {
                k: {"type": "string"} for k in ("namespace", "name", "uid", "created")}},
            "phase": {"type": "string", "enum": [p.value for p in JobPhase]},
            "done": {"type": "boolean", "description": "phase is Succeeded or Failed"},
            "progress": {"type": "string", "examples": ["7/12"]},
            "partitionsTotal": {"type": "integer"}, "partitionsDone": {"type": "integer"},
            "partitionsFailed": {"type": "integer"}, "rows": {"type": "integer"},
            "bytes": {"type": "integer"}, "slaState": {"type": "string"},
            "results": {"type": "array", "items": {"type": "object", "properties": {
                "partition": {"type": "string"}, "uri": {"type": "string"},
                "rows": {"type": "integer"}, "bytes": {"type": "integer"},
                "sha256": {"type": "string"}}}},
            "conditions": {"type": "array", "items": {"type": "object"}},
            "created": {"type": "boolean",
                        "description": "POST only: false when the trace id already had a job"}}}

    def problem(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/problem+json": {
            "schema": {"$ref": "#/components/schemas/Problem"}}}}

    def job(description: str) -> dict[str, Any]:
        return {"description": description, "headers": {"Location": {
            "schema": {"type": "string"}, "description": "/v1/joins/{traceId}"}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}}

    trace_param = {"name": "traceId", "in": "path", "required": True,
                   "schema": {"type": "string", "pattern": TRACE_ID_PATTERN}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "spatialjoin submission API", "version": "v1",
                 "description": "Submit partitioned spatial joins and follow them. Jobs are "
                                "SpatialJoinJob objects; the trace id is the idempotency key."},
        "security": [{"bearer": []}],
        "paths": {
            JOINS_PATH: {"post": {
                "operationId": "submitJoin", "summary": "Create the job of a trace id "
                                                        "(idempotent)",
                "parameters": [{"name": TRACE_HEADER, "in": "header", "required": True,
                                "schema": {"type": "string", "pattern": TRACE_ID_PATTERN}}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/SpatialJoinJobSpec"}}}},
                "responses": {
                    "202": job("Accepted: the job (new, or the existing one of this trace id)"),
                    "400": problem("Malformed body or header; errors[].field names the field"),
                    "401": problem("Missing or invalid bearer token; nothing was created"),
                    "409": problem("The derived job name is taken by another trace id"),
                    "413": problem("Body too large"),
                    "422": problem("The trace id already names a different join"),
                    "502": problem("The Kubernetes API failed")}}},
            JOINS_PATH + "/{traceId}": {"get": {
                "operationId": "getJoin", "summary": "Status and result objects of a job",
                "parameters": [trace_param, {
                    "name": "wait", "in": "query", "required": False,
                    "description": f"Wait up to this many seconds for the job to finish; "
                                   f"capped at {max_wait_s:g}s",
                    "schema": {"type": "number", "minimum": 0}}],
                "responses": {
                    "200": job("The job; with ?wait, it is done"),
                    "202": job("With ?wait: not done within the (capped) wait"),
                    "400": problem("Invalid wait"), "401": problem("Unauthorized"),
                    "404": problem("No job has this trace id")}}},
            "/openapi.json": {"get": {"operationId": "openapi", "security": [],
                                      "responses": {"200": {"description": "This document"}}}},
            "/healthz": {"get": {"operationId": "health", "security": [],
                                 "responses": {"200": {"description": "Serving"}}}},
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": schemas},
    }
