"""mergekit YAML from hostile bytes: one loader for the merge engine and for recorded recipes.

A recipe is read from a file someone else wrote (or from a statement). YAML lets a few lines stand for billions of
nodes through aliases, or nest deeper than Python recurses; both must end as one clean error, not a crash or a
machine out of memory (the bounds live in attest/strict_yaml.py, shared with policies and cards). Two equal keys
keep PyYAML's last-wins reading, which is how mergekit itself reads the recipe it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attest.errors import InputError
from attest.strict_yaml import MAX_DEPTH, MAX_NODES, load_yaml

MAX_RECIPE_BYTES = 1024 * 1024
MAX_RECIPE_NODES = MAX_NODES
"""Values in the parsed recipe counted with every YAML alias expanded (a real recipe has a few hundred)."""
MAX_RECIPE_DEPTH = MAX_DEPTH


def load_recipe_yaml(text: str, source: str | Path | None = None) -> Any:
    """The parsed recipe document (callers check its shape); any problem becomes one InputError naming `source`."""
    if len(text) > MAX_RECIPE_BYTES:
        raise InputError(source, f"recipe larger than {MAX_RECIPE_BYTES} bytes")
    return load_yaml(text, source, "recipe", unique_keys=False)
