"""Which recorded parent a mergekit recipe's model reference means: one rule for `record merge` (refuse parents that
are not the recipe's) and for verification (flag a merge statement whose parents disagree with its own recipe, and
bind replay parents).

The recipe names models by the strings the builder typed (paths, hub names); a statement names its parents by
digest, name and URI. A reference is bound to the one parent whose full path, URI or hub id it matches, else to the
one whose folder name or hub name it matches; a reference matching none or several, and a parent no reference
names, are reported, never guessed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import unquote, urlparse

from attest.errors import AttestError
from attest.statements.models import ROLES, ProvenanceStatement, ResourceDescriptor
from attest.statements.recipe import parse_recipe


def model_dependencies(deps: list[ResourceDescriptor] | None) -> list[ResourceDescriptor]:
    """The dependencies that are models (a role of ROLES and a sha256 digest)."""
    return [d for d in deps or [] if d.role in ROLES and d.sha256]


def _dep_keys(dep: ResourceDescriptor) -> tuple[set[str], set[str]]:
    """(exact keys, loose keys) of a recorded parent."""
    exact, loose = set(), set()
    if dep.name:
        loose.add(dep.name)
    if dep.uri:
        parsed = urlparse(dep.uri)
        if parsed.scheme == "file":
            p = Path(unquote(parsed.path))
            exact.add(str(p))
            loose.add(p.name)
        elif parsed.scheme == "hf":
            repo = (parsed.netloc + parsed.path).split("@")[0]
            exact |= {repo, repo.replace("/", "--")}
            loose.add(repo.split("/")[-1])
        else:
            exact.add(dep.uri)
    return exact, loose


def _ref_keys(ref: str) -> tuple[set[str], set[str]]:
    """(exact keys, loose keys) of a recipe reference. A reference that is a local folder is also its resolved path
    (mergekit resolves relative paths against the working directory, as record does)."""
    p = Path(ref)
    exact = {ref, ref.replace("/", "--")}
    try:
        if p.is_absolute() or ref.startswith(".") or p.is_dir():
            exact.add(str(p.resolve()))
    except OSError:
        pass
    return exact, {p.name}


def match_recipe_parents(refs: list[str], deps: list[ResourceDescriptor]) -> tuple[dict[str, str], list[str]]:
    """recipe reference -> digest of the recorded model parent it names; and one line per problem: a reference that
    matches no parent or several, and a recorded parent that no reference names."""
    parents = model_dependencies(deps)
    keyed = [(d, *_dep_keys(d)) for d in parents]
    bound: dict[str, str] = {}
    problems: list[str] = []
    for ref in refs:
        exact, loose = _ref_keys(ref)
        digests = {(d.digest or {})["sha256"] for d, e, _ in keyed if exact & e}
        if not digests:
            digests = {(d.digest or {})["sha256"] for d, e, lo in keyed if (exact | loose) & (e | lo)}
        if len(digests) != 1:
            problems.append(f"recipe model {ref!r} matches {'no' if not digests else 'several'} recorded parents")
            continue
        bound[ref] = digests.pop()
    named = set(bound.values())
    for d in parents:
        digest = (d.digest or {})["sha256"]
        if digest not in named:
            problems.append(
                f"parent {d.name or d.uri or digest[:16]!r} ({digest[:16]}) is not a model the recipe names"
            )
    return bound, problems


def recipe_parent_problems(statement: ProvenanceStatement) -> list[str]:
    """Why a merge statement's recorded parents are not exactly the models its own recorded recipe names ([] when
    they are). Checked on every trusted merge statement, with or without --replay (SPEC.md section 4, step 5)."""
    build = statement.predicate.buildDefinition
    config = (build.externalParameters or {}).get("mergekit_config")
    if not isinstance(config, dict) or not isinstance(config.get("yaml"), str):
        return ["the merge statement records no mergekit recipe, so its parents cannot be checked against one"]
    text: str = config["yaml"]
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != config.get("sha256"):
        return ["the recorded recipe does not match its recorded sha256"]
    try:
        refs = parse_recipe(text, "recorded recipe").referenced_models()
    except AttestError as exc:
        return [str(exc)]
    return match_recipe_parents(refs, build.resolvedDependencies or [])[1]
