"""mergekit YAML from hostile bytes: one loader for the merge engine and for recorded recipes.

A recipe is read from a file someone else wrote (or from a statement). YAML lets a few lines stand for billions of
nodes through aliases, or nest deeper than Python recurses; both must end as one clean error, not a crash or a
machine out of memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from attest.errors import InputError

MAX_RECIPE_BYTES = 1024 * 1024
MAX_RECIPE_NODES = 100_000
"""Values in the parsed recipe counted with every YAML alias expanded (a real recipe has a few hundred)."""
MAX_RECIPE_DEPTH = 32


def load_recipe_yaml(text: str, source: str | Path | None = None) -> Any:
    """The parsed recipe document (callers check its shape); any problem becomes one InputError naming `source`."""
    if len(text) > MAX_RECIPE_BYTES:
        raise InputError(source, f"recipe larger than {MAX_RECIPE_BYTES} bytes")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(source, f"not YAML mergekit can read (not valid YAML: {str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise InputError(source, "recipe YAML nested too deeply") from None
    except ValueError as exc:  # e.g. an integer too long to convert
        raise InputError(
            source, f"not a valid recipe ({str(exc).splitlines()[0] if str(exc) else 'ValueError'})"
        ) from None
    _check_expanded_size(data, source)
    return data


def _check_expanded_size(data: Any, source: str | Path | None) -> None:
    """YAML aliases share one object between many places: a few lines can stand for billions of nodes ("billion
    laughs") or for a structure that contains itself. Count the nodes as a reader walking it would see them
    (every alias expanded), without recursion, and refuse past the bounds."""
    nodes = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_RECIPE_NODES:
            raise InputError(source, f"recipe expands to more than {MAX_RECIPE_NODES} values (YAML aliases?)")
        if depth > MAX_RECIPE_DEPTH:
            raise InputError(source, f"recipe nested more than {MAX_RECIPE_DEPTH} levels deep (YAML aliases?)")
        if isinstance(value, dict):
            for k, v in value.items():
                stack.append((k, depth + 1))
                stack.append((v, depth + 1))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
