"""Planning a step before it is signed: what `attest record`, `attest merge --key` and `attest card --step` share.

A parent is given as `[ROLE=]DIR[@org/name]` or `[ROLE=]hf://org/name[@rev]` (parse_parent); it becomes a `ModelRef`
by hashing its bytes (model_input); a merge's base is the parent whose folder is the recipe's `base_model`, unless a
role says otherwise (merge_inputs); a merge's parents must be exactly the models its recipe names.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attest.errors import InputError
from attest.lineage.locator import (
    HF_SCHEME,
    Locator,
    hub_dataset_uri,
    hub_model_uri,
    model_path,
    split_hub_id,
)
from attest.record.recorder import RecordResult, Signing, record_step
from attest.record.refs import ModelRef, check_merge_parents, resolve_model
from attest.statements.builders import dataset_dependency
from attest.statements.models import DEFAULT_BUILDER_ID, ROLES, ResourceDescriptor, StepKind
from attest.statements.recipe import MergeRecipe

DEFAULT_PARENT_ROLE: dict[StepKind, str] = {
    "merge": "parent",
    "finetune": "base",
    "distill": "student-init",
    "quantize": "base",
    "convert": "base",
}


@dataclass(frozen=True)
class ParentArg:
    """One input model as given: its role, its folder, and the Hub repo id given for a local folder."""

    role: str
    path: Path
    hub: str | None = None
    explicit: bool = False
    """The role was written (`ROLE=`), not the step's default."""


def parse_parent(spec: str, default_role: str) -> ParentArg:
    """`[ROLE=]DIR[@org/name]` or `[ROLE=]hf://org/name[@rev]`; a prefix before '=' is a role only when it is one of
    ROLES. An hf:// address is resolved from the local Hugging Face cache, offline."""
    role, sep, rest = spec.partition("=")
    explicit = bool(sep) and role in ROLES
    if not explicit:
        if sep and "/" not in role and not spec.startswith(HF_SCHEME) and not Path(spec).exists():
            raise InputError(spec, f"unknown role {role!r} (choose from {', '.join(ROLES)})")
        role, rest = default_role, spec
    where, hub = split_hub_id(rest)
    return ParentArg(role, model_path(where), hub, explicit)


def model_input(arg: ParentArg, locator: Locator | None = None) -> tuple[str, ModelRef]:
    """An input as a statement names it: a Hub repo id given with `@org/name` becomes its `hf://org/name` URI (what
    the card's base_model shows)."""
    ref = resolve_model(arg.path, locator)
    return arg.role, dataclasses.replace(ref, uri=hub_model_uri(arg.hub)) if arg.hub else ref


def dataset_input(spec: str | os.PathLike[str]) -> ResourceDescriptor:
    """A dataset `FILE[@org/name]`: a Hub dataset id is recorded as the URI `hf://datasets/org/name`."""
    where, hub = split_hub_id(str(spec))
    dep = dataset_dependency(Path(where))
    return dep.model_copy(update={"uri": hub_dataset_uri(hub)}) if hub else dep


def parse_param(spec: str) -> tuple[str, Any]:
    """`k=v`: v is read as JSON when it is a JSON number, boolean or null, else kept as a string."""
    key, sep, value = spec.partition("=")
    if not sep or not key:
        raise InputError(None, f"--param {spec!r} is not KEY=VALUE")
    try:
        parsed = json.loads(value, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        if isinstance(parsed, bool | int | float) or parsed is None:
            return key, parsed
    except ValueError:
        pass
    return key, value


def parse_checkpoint(spec: str) -> tuple[int | None, Path]:
    """`[STEP=]DIR`: an intermediate checkpoint and the step it was written at."""
    step, sep, rest = spec.partition("=")
    if sep and step.isdigit():
        return int(step), Path(rest)
    return None, Path(spec)


def recipe_base_folder(recipe: MergeRecipe) -> Path | None:
    """The recipe's base_model as a folder written in the recipe (as `attest record merge` reads it), if it is one."""
    base = recipe.base_model
    return Path(base) if base and Path(base).exists() else None


def with_base_role(args: Sequence[ParentArg], base_folder: Path | None) -> list[ParentArg]:
    """A merge's base is the parent whose folder is the recipe's base folder, unless some --parent names a base."""
    if base_folder is None or any(a.explicit and a.role == "base" for a in args):
        return list(args)
    base = base_folder.resolve()
    return [dataclasses.replace(a, role="base") if a.path.resolve() == base else a for a in args]


def merge_inputs(
    recipe: MergeRecipe,
    config: Path,
    args: Sequence[ParentArg],
    base_folder: Path | None,
    locator: Locator | None = None,
) -> list[tuple[str, ModelRef]]:
    """The merge's parents, hashed, with the base's role, refused unless they are exactly the models the recipe
    names (what verification checks: refuse before signing)."""
    if not args:
        raise InputError(None, "no --parent given")
    locator = locator or Locator()
    inputs = [model_input(a, locator) for a in with_base_role(args, base_folder)]
    check_merge_parents(config, recipe.model_references(), inputs)
    return inputs


def record_merge(
    recipe: MergeRecipe,
    inputs: list[tuple[str, ModelRef]],
    output: Path,
    signing: Signing,
    internal: dict[str, Any],
    started_on: str | None = None,
    builder_id: str = DEFAULT_BUILDER_ID,
) -> RecordResult:
    """Sign that `output` is this merge of `inputs` (see merge_inputs): the recipe verbatim, digested and parsed."""
    return record_step(
        "merge",
        output,
        inputs,
        signing,
        external=recipe.external_parameters(),
        internal=internal,
        started_on=started_on,
        builder_id=builder_id,
    )
