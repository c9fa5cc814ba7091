"""The raw TOML tree checked against the schema before it is decoded.

Unknown keys, missing keys, wrong types and out-of-range numbers each become one line
naming the key path. The ranges and their notes are read from the fields' `msgspec.Meta`
through `msgspec.inspect`, so the schema is their one source; msgspec then decodes a tree
that already fits (and would refuse one that did not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import msgspec.inspect as mi

from agents.errors import InvalidArgument
from agents.limits import number_in, whole_in

_KINDS = {bool: "bool", int: "int", float: "float", str: "str", list: "array", dict: "object",
          type(None): "null"}


def check_tree(tree: object, struct: type[msgspec.Struct]) -> None:
    """Raise InvalidArgument for the first thing in `tree` that does not fit `struct`."""
    _check(tree, mi.type_info(struct), "", {})


def _check(value: object, kind: mi.Type, path: str, siblings: dict[str, Any]) -> None:
    note, extra = "", {}
    if isinstance(kind, mi.UnionType):  # the schema's only unions are `X | None`
        if value is None and any(isinstance(t, mi.NoneType) for t in kind.types):
            return
        [kind] = [t for t in kind.types if not isinstance(t, mi.NoneType)]
    if isinstance(kind, mi.Metadata):
        note = (kind.extra_json_schema or {}).get("description", "")
        extra = kind.extra or {}
        kind = kind.type
    if isinstance(kind, mi.StructType):
        _check_struct(value, kind, path)
    elif isinstance(kind, mi.DictType):
        for key, item in _expect(value, dict, path, "object").items():
            _check(item, kind.value_type, f"{path}.{key}", {})
    elif isinstance(kind, mi.ListType):
        for i, item in enumerate(_expect(value, list, path, "array")):
            _check(item, kind.item_type, f"{path}[{i}]", {})
    elif isinstance(kind, mi.IntType):
        high = kind.le
        if isinstance(at_most := siblings.get(extra.get("at_most", "")), int):
            high = min(high, max(at_most, 0))
        _noted(note, whole_in, _expect(value, int, path, "int"), path, kind.ge, high)
    elif isinstance(kind, mi.FloatType):  # number_in also refuses nan and inf
        low_open = kind.gt is not None
        _noted(note, number_in, _expect(value, (int, float), path, "float"), path,
               kind.gt if low_open else kind.ge, kind.le, low_open=low_open)
    elif isinstance(kind, mi.LiteralType):
        if not isinstance(value, str) or value not in kind.values:
            choices = ", ".join(f'"{v}"' for v in kind.values)
            raise InvalidArgument(f"{path}: expected one of {choices}, got {value!r}")
    elif isinstance(kind, mi.StrType):
        _expect(value, str, path, "str")
    elif isinstance(kind, mi.BoolType):
        _expect(value, bool, path, "bool")
    else:  # a schema change this checker does not know yet: fail loudly, not silently
        raise TypeError(f"config schema: {path}: cannot check {kind!r}")


def _check_struct(value: object, kind: mi.StructType, path: str) -> None:
    table = _expect(value, dict, path, "object")
    fields = {f.encode_name: f for f in kind.fields}
    for key in table:
        if key not in fields:
            raise InvalidArgument(f"unknown key {path + '.' if path else ''}{key}")
    for name, field in fields.items():
        if name in table:
            _check(table[name], field.type, f"{path}.{name}".lstrip("."), table)
        elif field.required:
            raise InvalidArgument(f"{path or '(top level)'}: missing required key {name}")


def _expect(value: Any, types: type | tuple[type, ...], path: str, name: str) -> Any:
    """`value` when it is of `types` (a bool is no number), else `PATH: expected `NAME`, got ...`."""
    if isinstance(value, types) and (name == "bool" or not isinstance(value, bool)):
        return value
    got = _KINDS.get(type(value), type(value).__name__)
    raise InvalidArgument(f"{path or '(top level)'}: expected `{name}`, got `{got}`")


def _noted(note: str, check: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """`check(*args)` (whole_in or number_in), with the field's note after its message."""
    try:
        check(*args, **kwargs)
    except InvalidArgument as err:
        raise InvalidArgument(f"{err} ({note})" if note else str(err)) from None
