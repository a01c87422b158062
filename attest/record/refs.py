"""Naming an input checkpoint: always by hashing its bytes (SPEC.md 2.3).

A parent's `.attest/` is a claim nobody has verified at record time, so its root is never taken from there: the
folder is hashed, and when it carries a bundle, the statement about the hashed root is named
(`annotations.statement`) and the whole bundle travels into the child, so the chain verifies from the child folder
alone. A bundle with no statement about the hashed root is refused: the folder changed after it was attested, or
the bundle is another model's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from attest.errors import InputError
from attest.lineage.locator import Locator, model_uri
from attest.lineage.store import bundle_path, head_envelopes, load_bundle, load_sigstore_bundles, statements_about
from attest.signing.dsse import Envelope
from attest.statements.builders import model_dependency
from attest.statements.parse import parse_statement
from attest.statements.recipe_parents import match_recipe_parents


@dataclass(frozen=True)
class ModelRef:
    """An input checkpoint as a statement names it."""

    path: Path
    name: str
    uri: str
    model_root: str
    weights_root: str
    statement: str | None = None
    """sha256 of the payload of the parent's own statement about its hashed root, when its folder carries one."""
    envelopes: list[Envelope] = field(default_factory=list)
    sigstore: dict[str, bytes] = field(default_factory=dict)


def resolve_model(path: str | os.PathLike[str], locator: Locator | None = None) -> ModelRef:
    """Name a model folder for a statement (see module docstring). Raises InputError for a non-model folder, or for
    one whose own bundle has no statement about the root its bytes hash to. The locator hashes each folder once."""
    p = Path(path)
    # never believe the folder's own claim: its .attest/ is unsigned as far as we know
    model_root, weights_root = (locator or Locator()).roots(p)
    envelopes = load_bundle(p)
    sigstore = load_sigstore_bundles(p)
    uri = model_uri(p)
    name = p.resolve().name
    if not envelopes:
        return ModelRef(p, name, uri, model_root, weights_root, None, envelopes, sigstore)
    own = statements_about(envelopes, model_root)
    if not own:
        claimed = _claimed_roots(head_envelopes(envelopes))
        raise InputError(
            bundle_path(p),
            f"no statement in it is about this folder (its bytes hash to model root {model_root}"
            + (f"; the bundle claims {', '.join(r[:16] for r in claimed)}" if claimed else "")
            + "): the folder changed after it was attested, or the bundle belongs to another model",
        )
    return ModelRef(p, name, uri, model_root, weights_root, own[0].payload_digest, envelopes, sigstore)


def _claimed_roots(heads: list[Envelope]) -> list[str]:
    """The model roots a bundle's newest statements name (only to explain a refusal)."""
    return sorted({d for env in heads for d in parse_statement(env.payload_bytes).subject_digests("sha256")})


def check_merge_parents(config: Path, refs: list[str], inputs: list[tuple[str, ModelRef]]) -> None:
    """Refuse a merge recording whose model parents are not exactly the models its recipe names (`refs`, SPEC.md
    2.5), by the rule verification applies to the signed statement (attest.statements.recipe_parents)."""
    deps = [model_dependency(r.name, r.uri, r.model_root, r.weights_root, role, r.statement) for role, r in inputs]
    _, problems = match_recipe_parents(refs, deps)
    if problems:
        raise InputError(config, f"--parent does not match the recipe: {problems[0]}")
