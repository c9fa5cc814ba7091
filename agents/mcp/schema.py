"""An MCP tool's input schema as a msgspec Struct: what the step grammar is built from and
what the gate parses a call with, like a built-in tool's arguments.

Only what the grammar can express exactly is accepted: scalar properties with their
bounds, string enums, arrays of those, and one level of nested object. Anything else
($ref, anyOf, pattern, open objects...) is refused with a reason naming the construct
and the property, never loosened into something the server did not ask for.
"""

from __future__ import annotations

import hashlib
import keyword
import math
import re
import sys
from typing import Annotated, Any, Literal

import msgspec

from agents.errors import AgentdeckError
from agents.safe_text import safe_text

MAX_PROPERTIES = 32
MAX_ENUM = 256  # values of one string enum
PROPERTY_DESCRIPTION_CAP = 160
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # a bound for every integer (SQLite's, JSON's safe side)
FLOAT_MAX = sys.float_info.max  # ge/le on every number: NaN and the infinities fail them
_PROPERTY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")

# Annotations only: they do not constrain the value (`format` is an annotation by default
# in JSON Schema 2020-12), so leaving them out loosens nothing.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$comment", "$id",
                          "readOnly", "writeOnly", "deprecated", "format"})
_SCALAR_KEYS = {
    "string": {"type", "enum", "maxLength", "minLength"},
    "integer": {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "number": {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "boolean": {"type"},
}
_OBJECT_KEYS = {"type", "properties", "required", "additionalProperties"}
_ARRAY_KEYS = {"type", "items", "maxItems", "minItems"}


class SchemaRefused(AgentdeckError):
    """An input schema the step grammar cannot express (the reason says what and where)."""


def prompt_description(description: str, cap: int = 300) -> str:
    """A server's description as one terminal-safe line of at most about `cap` characters."""
    line = safe_text(" ".join(str(description).split())[: cap + 1])
    return line if len(line) <= cap else line[: max(cap - 1, 0)] + "…"


def struct_name(server: str, tool: str) -> str:
    """Unique per server and tool: the crew merges every tool's $defs into one grammar."""
    digest = hashlib.sha256(f"{server}\0{tool}".encode()).hexdigest()[:8]
    readable = re.sub(r"[^A-Za-z0-9]", "_", f"{server}_{tool}")[:48]
    return f"Mcp_{readable}_{digest}"


def struct_for(server: str, tool: str, input_schema: dict[str, Any]) -> type[msgspec.Struct]:
    """The arguments Struct for `server`'s tool `tool`; raises SchemaRefused."""
    if not isinstance(input_schema, dict):
        raise SchemaRefused(f"mcp.{server}.{tool}: the input schema is not a JSON object")
    return _object(struct_name(server, tool), input_schema, where="", depth=0,
                   label=f"mcp.{server}.{tool}")


def _refuse(label: str, where: str, what: str) -> SchemaRefused:
    at = f" (property {where!r})" if where else ""
    return SchemaRefused(f"{label}: the input schema uses {what}{at}, which the step grammar cannot express")


_NAMED = ("$ref", "anyOf", "oneOf", "allOf", "not", "$defs", "definitions", "pattern", "patternProperties",
          "const", "if", "then", "else", "dependentSchemas", "propertyNames", "uniqueItems", "prefixItems",
          "contains")


def _check_keys(label: str, where: str, schema: dict[str, Any], allowed: set[str]) -> None:
    for key in _NAMED:  # the constructs people look for, named before anything else
        if key in schema:
            raise _refuse(label, where, key)
    for key in schema:
        if key not in allowed and key not in _ANNOTATIONS:
            raise _refuse(label, where, f"the keyword {safe_text(str(key))[:40]!r}")


def _object(name: str, schema: dict[str, Any], *, where: str, depth: int, label: str) -> type[msgspec.Struct]:
    if schema.get("type", "object") != "object":
        raise _refuse(label, where, f"type {safe_text(str(schema.get('type')))[:40]} where an object belongs")
    _check_keys(label, where, schema, _OBJECT_KEYS)
    extra = schema.get("additionalProperties", False)
    if extra is not False:
        raise _refuse(label, where, "additionalProperties (an open object)")
    props = schema.get("properties", {})
    required = schema.get("required", [])
    if not isinstance(props, dict) or not isinstance(required, list):
        raise _refuse(label, where, "malformed properties or required")
    if len(props) > MAX_PROPERTIES:
        raise _refuse(label, where, f"{len(props)} properties (at most {MAX_PROPERTIES})")
    unknown = [r for r in required if r not in props]
    if unknown:
        raise _refuse(label, where, f"a required property that is not defined ({str(unknown[0])[:40]!r})")
    fields: list[tuple[str, Any, Any] | tuple[str, Any]] = []
    rename: dict[str, str] = {}
    for i, (prop, sub) in enumerate(props.items()):
        path = f"{where}.{prop}" if where else str(prop)
        if not isinstance(prop, str) or not _PROPERTY_NAME.fullmatch(prop):
            raise _refuse(label, safe_text(path)[:80], "a property name that is not an identifier")
        if not isinstance(sub, dict):
            raise _refuse(label, path, "a property schema that is not an object")
        kind = _property(name, prop, sub, where=path, depth=depth, label=label)
        field = prop
        if not prop.isidentifier() or keyword.iskeyword(prop) or prop.startswith("_"):
            field = f"field_{i}"
            rename[field] = prop
        if prop in required:
            fields.append((field, kind))
        else:
            fields.append((field, kind | None, None))
    return msgspec.defstruct(name, fields, kw_only=True, forbid_unknown_fields=True, omit_defaults=True,
                             rename=rename or None)


def _property(parent: str, prop: str, schema: dict[str, Any], *, where: str, depth: int, label: str) -> Any:
    kind = schema.get("type")
    if isinstance(kind, list):
        raise _refuse(label, where, "a list of types")
    _check_keys(label, where, schema, {*_OBJECT_KEYS, *_ARRAY_KEYS, *_SCALAR_KEYS["string"],
                                       *_SCALAR_KEYS["number"]})
    if kind == "object" or (kind is None and "properties" in schema):
        if depth >= 1:
            raise _refuse(label, where, "an object nested more than one level")
        nested = _object(f"{parent}_{re.sub(r'[^A-Za-z0-9]', '_', prop)}", schema, where=where,
                         depth=depth + 1, label=label)
        return _described(nested, schema, {})
    if kind == "array":
        _check_keys(label, where, schema, _ARRAY_KEYS)
        items = schema.get("items")
        if not isinstance(items, dict):
            raise _refuse(label, where, "an array without one items schema")
        if items.get("type") in ("object", "array") or "properties" in items:
            raise _refuse(label, where, "an array of objects or arrays")
        item = _scalar(items, where=f"{where}[]", label=label)
        meta = _bounds(schema, "minItems", "maxItems", label, where)
        return _described(list[item], schema, meta)  # type: ignore[valid-type]
    return _scalar(schema, where=where, label=label, described=True)


def _scalar(schema: dict[str, Any], *, where: str, label: str, described: bool = False) -> Any:
    kind = schema.get("type")
    if kind is None and "enum" in schema:
        kind = "string"
    if kind not in _SCALAR_KEYS:
        raise _refuse(label, where, f"type {safe_text(str(kind))[:40]!r}")
    _check_keys(label, where, schema, _SCALAR_KEYS[kind])
    meta: dict[str, Any] = {}
    base: Any
    if "enum" in schema:
        values = schema["enum"]
        if kind != "string" or not isinstance(values, list) or not values \
                or not all(isinstance(v, str) for v in values):
            raise _refuse(label, where, "an enum of values other than strings")
        if len(values) > MAX_ENUM:
            raise _refuse(label, where, f"an enum of {len(values)} values (at most {MAX_ENUM})")
        base = Literal[tuple(dict.fromkeys(values))]  # type: ignore[valid-type]
    elif kind == "string":
        base = str
        meta = _bounds(schema, "minLength", "maxLength", label, where)
    elif kind == "integer":
        base = int
        meta = _numeric(schema, label, where, integer=True)
    elif kind == "number":
        base = float
        meta = _numeric(schema, label, where, integer=False)
    else:
        base = bool
    return _described(base, schema if described else {}, meta)


def _bounds(schema: dict[str, Any], low: str, high: str, label: str, where: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key, arg in ((low, "min_length"), (high, "max_length")):
        if key in schema:
            value = schema[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise _refuse(label, where, f"a {key} that is not a non-negative integer")
            meta[arg] = value
    return meta


def _numeric(schema: dict[str, Any], label: str, where: str, *, integer: bool) -> dict[str, Any]:
    """Bounds for every number: the schema's, else the widest the store and JSON keep."""
    low, high = (INT_MIN, INT_MAX) if integer else (-FLOAT_MAX, FLOAT_MAX)
    meta: dict[str, Any] = {"ge": low, "le": high}
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key not in schema:
            continue
        value = schema[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise _refuse(label, where, f"a {key} that is not a finite number")
        lower = key in ("minimum", "exclusiveMinimum")
        exclusive = key.startswith("exclusive")
        if integer:
            bound = math.floor(value) + 1 if exclusive and lower else math.ceil(value) if lower else \
                math.ceil(value) - 1 if exclusive else math.floor(value)
            bound = min(max(bound, INT_MIN), INT_MAX)
            meta["ge" if lower else "le"] = max(meta["ge"], bound) if lower else min(meta["le"], bound)
        elif exclusive:
            meta.pop("ge" if lower else "le", None)
            meta["gt" if lower else "lt"] = float(value)
        else:
            meta["ge" if lower else "le"] = float(value)
    return meta


def _described(base: Any, schema: dict[str, Any], meta: dict[str, Any]) -> Any:
    description = schema.get("description")
    if isinstance(description, str) and description.strip():
        meta = {**meta, "description": prompt_description(description, PROPERTY_DESCRIPTION_CAP)}
    return Annotated[base, msgspec.Meta(**meta)] if meta else base
