"""JSON from hostile files: a repeated key would let two readers of the same bytes see different documents, and a
number too large for a double (`1e400`) would be read as Infinity, which JSON cannot carry."""

from __future__ import annotations

import json
import math
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
