"""Pydantic JSON schema -> Kubernetes structural OpenAPI v3 schema.

Pydantic emits JSON Schema 2020-12: ``$defs`` with ``$ref``, ``anyOf`` with
``null`` for optionals, titles, ``additionalProperties: false`` for strict
models and numeric ``exclusiveMinimum``.  A CRD needs a *structural* schema
(apiextensions.k8s.io/v1): every node typed, no references, no ``anyOf`` over
types, OpenAPI 3.0 keywords.  This module is the translation, kept strict: a
keyword it does not know raises instead of being dropped silently, so a model
change that the CRD cannot express fails the generator, not the apiserver.

Defaults: the apiserver applies a property's default when the property is
absent, then recurses into it.  A nested object whose fields all have
defaults therefore gets ``default: {}``, and the server fills in the rest;
the generator checks that this yields exactly pydantic's default.

Why not kube-custom-resource: it targets its own model base classes and
Kubernetes' newer CEL-era behaviour; the translation here is ~150 lines,
explicit about every keyword, and keeps our plain pydantic models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

Schema = dict[str, Any]

# Output key order: stable YAML and a readable kubectl explain source.
_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "required",
    "properties",
    "items",
    "additionalProperties",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
)
_DROPPED = frozenset({"title", "$defs", "examples", "uniqueItems"})
_FORMATS = frozenset({"date-time", "date", "int32", "int64", "float", "double", "byte"})


class UnsupportedSchema(ValueError):
    """The model uses a construct a structural schema cannot express."""


def structural_schema(model: type[BaseModel]) -> Schema:
    """The structural schema of ``model``'s camelCase JSON form."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _convert(raw, raw.get("$defs", {}), path=model.__name__)


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any], path: str) -> Schema:
    """Inline $ref / single allOf / optional anyOf; sibling keywords win over the target's."""
    node = dict(node)
    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        if name not in defs:
            raise UnsupportedSchema(f"{path}: unknown reference {name!r}")
        node = {**_resolve(defs[name], defs, path), **node}
    if "allOf" in node:
        (only,) = node.pop("allOf")
        node = {**_resolve(only, defs, path), **node}
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b != {"type": "null"}]
        if len(branches) != 1:
            raise UnsupportedSchema(f"{path}: unions other than Optional[X] are not structural")
        # An optional field is simply omitted when absent; its null default is dropped.
        if node.get("default", ...) is None:
            del node["default"]
        node = {**_resolve(branches[0], defs, path), **node}
    if node.get("default", ...) is None:
        del node["default"]
    return node


def _convert(node: Mapping[str, Any], defs: Mapping[str, Any], path: str) -> Schema:
    src = _resolve(node, defs, path)
    out: Schema = {}
    for key, value in src.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if isinstance(value, Mapping):
                out[key] = _convert(value, defs, f"{path}{{}}")
            # true/false: structural schemas prune unknown fields anyway
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            if not isinstance(value, bool):  # JSON Schema 2020-12 number -> OpenAPI 3.0 bool
                out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
                value = True
            out[key] = value
        elif key == "format":
            if value in _FORMATS:
                out[key] = value
        elif key in _KEY_ORDER:
            out[key] = value
        else:
            raise UnsupportedSchema(f"{path}: keyword {key!r} has no structural equivalent")
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise UnsupportedSchema(f"{path}: every structural schema node needs a type")
    if "default" in out:
        out["default"] = _structural_default(out, path)
    return {key: out[key] for key in _KEY_ORDER if key in out}


def implied_default(schema: Mapping[str, Any]) -> dict[str, Any]:
    """What the apiserver's defaulting puts into ``{}`` for this object schema."""
    result: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        if "default" not in prop:
            continue
        default = prop["default"]
        if default == {} and prop.get("type") == "object":
            default = implied_default(prop)
        result[name] = default
    return result


def _structural_default(schema: Schema, path: str) -> Any:
    default = schema["default"]
    if default == "":
        # Kubernetes 1.20 reads an empty-string default as null and rejects the CRD.
        raise UnsupportedSchema(f"{path}: an empty-string default is refused by the apiserver")
    if schema.get("type") != "object" or not isinstance(default, Mapping):
        return default
    wanted = _without_nulls(default)
    implied = implied_default(schema)
    if wanted != implied:
        raise UnsupportedSchema(
            f"{path}: object default {wanted!r} differs from its fields' defaults {implied!r}"
        )
    return {}


def _without_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
