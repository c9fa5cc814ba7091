"""JSON schema -> GBNF grammar text (llama-cpp-python's converter), cached per schema."""

from __future__ import annotations

import functools
import json
from typing import Any


@functools.lru_cache(maxsize=128)
def _convert(schema_json: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(schema_json)


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """GBNF whose root accepts exactly the JSON documents of `schema` (a useful subset of
    JSON Schema: objects, arrays, enums, const, strings with min/maxLength or pattern, ...).
    Raises ValueError for a schema the converter does not understand."""
    try:
        # Not sort_keys: property order is the order the model writes them in.
        return _convert(json.dumps(schema, separators=(",", ":")))
    except (TypeError, ValueError, KeyError, AssertionError, RecursionError) as err:
        raise ValueError(f"cannot turn the JSON schema into a grammar: {err}") from None
