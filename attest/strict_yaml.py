"""YAML from hostile bytes, read one way for every reader: duplicate keys refused, aliases and nesting bounded.

A policy, a model card's front matter or a mergekit recipe is a file someone else wrote. Plain `yaml.safe_load`
keeps the *last* of two equal keys, so `full_disclosure: true` followed by `full_disclosure: false` silently turns a
rule off while a reader of the file sees it on; and YAML aliases let a few lines stand for billions of nodes.
Every problem ends as one InputError naming the file, never a crash or a machine out of memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from attest.errors import InputError

MAX_NODES = 100_000
"""Values in a parsed document counted with every YAML alias expanded (a real policy or recipe has a few hundred)."""
MAX_DEPTH = 32


class DuplicateKeyError(ConstructorError):
    """A mapping names the same key twice (after YAML merge keys are expanded)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader whose mappings refuse a key given twice, however it is spelled (`a`, `"a"`, via `<<:`)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    raise ConstructorError(
                        "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark
                    ) from None
                if key in seen:
                    raise DuplicateKeyError(
                        None, None, f"key {str(key)[:80]!r} given twice (line {key_node.start_mark.line + 1})"
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(
    text: str,
    source: str | Path | None,
    what: str,
    *,
    unique_keys: bool = True,
    allow_aliases: bool = True,
    max_nodes: int = MAX_NODES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """The parsed document (callers check its shape). `what` names the document in messages ("policy", "recipe").
    unique_keys=False keeps PyYAML's last-key-wins reading, for formats whose peer tool (mergekit) reads them so."""
    loader = UniqueKeyLoader if unique_keys else yaml.SafeLoader
    try:
        if not allow_aliases and any(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise InputError(source, f"{what} uses YAML aliases, which it does not need (refused)")
        data = yaml.load(text, Loader=loader)  # a SafeLoader (subclass): no arbitrary objects
    except DuplicateKeyError as exc:
        raise InputError(source, f"{what} is ambiguous: {exc.problem} (refused)") from None
    except yaml.YAMLError as exc:
        raise InputError(
            source, f"{what} is not YAML attest can read (not valid YAML: {str(exc).splitlines()[0]})"
        ) from None
    except RecursionError:
        raise InputError(source, f"{what} YAML nested too deeply") from None
    except ValueError as exc:  # e.g. an integer too long to convert, a timestamp out of range
        first = str(exc).splitlines()[0] if str(exc) else "ValueError"
        raise InputError(source, f"{what} is not valid YAML ({first})") from None
    check_expanded_size(data, source, what, max_nodes=max_nodes, max_depth=max_depth)
    return data


def check_expanded_size(
    data: Any, source: str | Path | None, what: str, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH
) -> None:
    """YAML aliases share one object between many places: a few lines can stand for billions of nodes ("billion
    laughs") or for a structure that contains itself. Count the nodes as a reader walking it would see them
    (every alias expanded), without recursion, and refuse past the bounds."""
    nodes = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise InputError(source, f"{what} expands to more than {max_nodes} values (YAML aliases?)")
        if depth > max_depth:
            raise InputError(source, f"{what} nested more than {max_depth} levels deep (YAML aliases?)")
        if isinstance(value, dict):
            for k, v in value.items():
                stack.append((k, depth + 1))
                stack.append((v, depth + 1))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
