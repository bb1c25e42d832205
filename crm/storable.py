"""What the data store can hold of outside input, checked once for every entry
point: API parameters and bodies, the console's query strings; and the one
escape of text that must be kept whatever it holds (dead letters).

Django accepts such values and the failure comes later, as a 500: PostgreSQL
text cannot hold a NUL character (psycopg2 refuses the parameter with a
ValueError), jsonb cannot hold \\u0000, NaN or Infinity, a str with a lone
surrogate cannot be encoded as UTF-8, and orjson, which writes the JSON columns
(crm.bulk.json_param), refuses integers beyond 64 bits and nesting deeper than
255 levels.
"""

from __future__ import annotations

import math
from typing import Any

# The one nesting limit of stored JSON, for every entry point: the collectors
# (ingestion.spec), the profiles API and the console. Counted in containers, the
# field's own object or array being level 1 ({"a": [1]} is 2 levels). A trait a
# collector stored can so be sent back unchanged. Far more than any SDK sends,
# and far below orjson's 255 (with the few levels the bulk writers wrap around a
# value) and Python's recursion limit.
MAX_JSON_DEPTH = 64
_INT64 = 2**63


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None when it can."""
    if "\x00" in value:
        return "must not contain a NUL character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode (it has a lone surrogate)"
    return None


def text_storable(text: str) -> str:
    """`text` as PostgreSQL's text can hold it, for reading (not reversibly): a
    NUL as the six characters backslash-u0000, a lone surrogate as its backslash
    escape. For what must be kept whatever it holds (a dead letter's error)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_nested_deeper_than(value: Any, levels: int = MAX_JSON_DEPTH) -> bool:
    """Whether `value` nests objects and arrays more than `levels` levels deep
    (a scalar is level 0), counted as json_problem counts. Stops descending at
    the limit, so a value nested as deep as the JSON parser allows (1,024) costs
    no deep recursion."""
    kind = type(value)
    if kind is not dict and kind is not list:
        return False
    if levels <= 0:
        return True
    return any(json_nested_deeper_than(child, levels - 1) for child in (value.values() if kind is dict else value))


def json_problem(value: Any, *, path: str, depth: int = 0) -> str | None:
    """Why `value` (as json.loads gives it) cannot be stored in a jsonb column,
    naming where in it (`path`, e.g. "traits['sizes'][2]: ..."); None when it can."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        problem = text_problem(value)
        return f"{path}: {problem}" if problem else None
    if isinstance(value, int):
        return None if -_INT64 <= value < _INT64 else f"{path}: integer out of range (64 bits)"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path}: must be a finite number"
    if not isinstance(value, dict | list):
        return f"{path}: not a JSON value ({type(value).__name__})"
    if depth >= MAX_JSON_DEPTH:
        return f"{path}: nested deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = json_problem(item, path=f"{path}[{index}]", depth=depth + 1)
            if problem:
                return problem
        return None
    for key, item in value.items():
        if not isinstance(key, str):
            return f"{path}: keys must be strings, got {key!r}"
        where = f"{path}[{key[:40]!r}]"
        problem = text_problem(key)
        if problem:
            return f"{where}: the key {problem}"
        problem = json_problem(item, path=where, depth=depth + 1)
        if problem:
            return problem
    return None
