"""JSON from hostile files: a repeated key would let two readers of the same bytes see different documents, and a
number too large for a double (`1e400`) would be read as Infinity, which JSON cannot carry."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from typing import Any


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook for json.loads that refuses a key seen twice in one object."""
    out = dict(pairs)
    if len(out) != len(pairs):  # one dict build per object, not a Python loop per key (10^5 tensor entries)
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return out


def finite_float(text: str) -> float:
    """parse_float for json.loads: a literal that overflows a double (`1e400`) is refused, not read as Infinity."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range (it would be read as Infinity)")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_loads(
    text: str | bytes, object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] = reject_duplicate_keys
) -> Any:
    """json.loads refusing duplicate keys, NaN/Infinity and numbers that overflow to Infinity. Raises ValueError
    (or RecursionError for absurd nesting), as json.loads does. A custom hook must refuse duplicate keys too."""
    return json.loads(
        text, object_pairs_hook=object_pairs_hook, parse_constant=_reject_constant, parse_float=finite_float
    )


_DECODER = json.JSONDecoder(
    object_pairs_hook=reject_duplicate_keys, parse_constant=_reject_constant, parse_float=finite_float
)
"""strict_loads' decoder, for one value at a time (raw_decode)."""
_WS = re.compile(r"[ \t\n\r]*")
"""JSON's whitespace, as the json module skips it."""
scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
"""json's own string scanner (the C one where available): the string starting after the quote at `end`, and the
position after its closing quote."""


def _skip(text: str, i: int) -> int:
    """The position of the first character at or after i that is not JSON whitespace."""
    m = _WS.match(text, i)
    assert m is not None  # the pattern matches the empty string
    return m.end()


def strict_loads_string_map(text: str, member: str) -> Any:
    """strict_loads(text) for a document whose member `member` is a large object of strings (a shard index's
    weight_map of 10^5 tensor names), with that object's names interned and its equal values one string.

    json.loads holds every member of an object as parser bookkeeping (a key memo, a pair and a value string each,
    ~0.3 KB per member) until the object is complete. Here the top-level object is walked member by member: the
    names and string values of `member` are read one at a time by json's own string scanner, every other value by
    json's own decoder with strict_loads' rules. Any other shape (a repeated name, a value that is not a string,
    malformed text) is left to strict_loads, whose result or error is the answer."""
    try:
        doc = _walk_object(text, member)
    except (ValueError, RecursionError, IndexError):
        doc = None
    if doc is not None:
        return doc
    doc = strict_loads(text)
    value = doc.get(member) if isinstance(doc, dict) else None
    if isinstance(value, dict):
        shared: dict[str, str] = {}
        doc[member] = {sys.intern(k): shared.setdefault(v, v) if type(v) is str else v for k, v in value.items()}
    return doc


def _walk_object(text: str, member: str) -> dict[str, Any] | None:
    """The top-level object, or None when it is not in the simple shape (the caller then uses strict_loads)."""
    i = _skip(text, 0)
    if text[i] != "{":
        return None
    out: dict[str, Any] = {}
    i = _skip(text, i + 1)
    if text[i] == "}":
        return out if _skip(text, i + 1) == len(text) else None
    while True:
        if text[i] != '"':
            return None
        name, i = scanstring(text, i + 1, True)
        i = _skip(text, i)
        if text[i] != ":" or name in out:
            return None
        i = _skip(text, i + 1)
        if name == member and text[i] == "{":
            strings, i = _walk_strings(text, i)
            if strings is None:
                return None
            out[name] = strings
        else:
            out[name], i = _DECODER.raw_decode(text, i)
        i = _skip(text, i)
        if text[i] == ",":
            i = _skip(text, i + 1)
            continue
        if text[i] != "}":
            return None
        return out if _skip(text, i + 1) == len(text) else None


_PLAIN_ENTRY = re.compile(r'"([^"\\\x00-\x1f]*)"[ \t\n\r]*:[ \t\n\r]*"([^"\\\x00-\x1f]*)"[ \t\n\r]*([,}])[ \t\n\r]*')
"""`"name": "value",` (or `}`) whose strings hold no escape, quote or control character: their JSON values are the
characters as written. Any other entry is read by json's string scanner."""


def _walk_strings(text: str, i: int) -> tuple[dict[str, str] | None, int]:
    """The object of strings starting at text[i] == "{" and the position after it; None when a value is not a
    string or a name repeats."""
    plain = _PLAIN_ENTRY.match
    out: dict[str, str] = {}
    shared: dict[str, str] = {}
    i = _skip(text, i + 1)
    if text[i] == "}":
        return out, i + 1
    while True:
        m = plain(text, i)
        if m is not None:
            name, value, end = m.group(1, 2, 3)
            i = m.end()
        else:
            if text[i] != '"':
                return None, i
            name, i = scanstring(text, i + 1, True)
            i = _skip(text, i)
            if text[i] != ":":
                return None, i
            i = _skip(text, i + 1)
            if text[i] != '"':
                return None, i
            value, i = scanstring(text, i + 1, True)
            i = _skip(text, i)
            end = text[i]
            if end not in ",}":
                return None, i
            i = _skip(text, i + 1)
        n = len(out)
        out[sys.intern(name)] = shared.setdefault(value, value)
        if len(out) == n:
            return None, i
        if end == "}":
            return out, i
