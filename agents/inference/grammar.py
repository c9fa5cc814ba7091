"""JSON schema -> GBNF grammar text (llama-cpp-python's converter), cached per schema."""

from __future__ import annotations

import functools
import json
from typing import Any

# llama-cpp-python's converter lets raw control characters (newline, tab) into strings,
# which JSON forbids: the model wrote them and every strict decoder refused the output.
# llama.cpp's own converter excludes them; so do we.
_LOOSE_CHAR = 'char ::= [^"\\\\]'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F]'


# Its literals escape `"` but not the backslash, so a const or enum whose JSON holds a
# quote (`"  \"retries\": 3"`, a line of a JSON file) ended the literal early and llama.cpp
# rejected the grammar. llama.cpp's converter escapes both; so do we.
_LITERAL_ESCAPES = {"\r": "\\r", "\n": "\\n", '"': '\\"', "\\": "\\\\"}


@functools.lru_cache(maxsize=128)
def _convert(schema_json: str) -> str:
    from llama_cpp.llama_grammar import SchemaConverter

    class _Converter(SchemaConverter):
        def _format_literal(self, literal: str) -> str:
            return '"' + "".join(_LITERAL_ESCAPES.get(c, c) for c in literal) + '"'

    converter = _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    converter.visit(converter.resolve_refs(json.loads(schema_json), "stdin"), "")
    return converter.format_grammar().replace(_LOOSE_CHAR, _JSON_CHAR)


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """GBNF whose root accepts exactly the JSON documents of `schema` (a useful subset of
    JSON Schema: objects, arrays, enums, const, strings with min/maxLength or pattern, ...).
    Raises ValueError for a schema the converter does not understand."""
    try:
        # Not sort_keys: property order is the order the model writes them in.
        return _convert(json.dumps(schema, separators=(",", ":")))
    except (TypeError, ValueError, KeyError, AssertionError, RecursionError) as err:
        raise ValueError(f"cannot turn the JSON schema into a grammar: {err}") from None
