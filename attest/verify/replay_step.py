"""Replay a recorded merge during verification: the recipe comes from the signed statement, each parent folder must
already have been re-hashed to the digest the statement names, and the candidate is the verified folder itself.

The recipe names its models by the strings the builder typed (paths, hub names); the statement names its parents by
digest, name and URI. A recipe reference is bound to the one dependency whose URI path, folder name or hub name it
matches; anything ambiguous or missing is reported, never guessed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from attest.errors import AttestError
from attest.statements.models import ROLES, ProvenanceStatement, ResourceDescriptor


@dataclass
class ReplayOutcome:
    ok: bool
    verdict: str  # reproduced | reproduced_within_tolerance | not_reproduced | cannot_replay
    summary: str
    mismatched: list[str]


def _dep_keys(dep: ResourceDescriptor) -> set[str]:
    keys = set()
    if dep.name:
        keys.add(dep.name)
    if dep.uri:
        parsed = urlparse(dep.uri)
        if parsed.scheme == "file":
            p = Path(unquote(parsed.path))
            keys |= {str(p), p.name}
        elif parsed.scheme == "hf":
            repo = (parsed.netloc + parsed.path).split("@")[0]
            keys |= {repo, repo.replace("/", "--"), repo.split("/")[-1]}
        else:
            keys.add(dep.uri)
    return keys


def _ref_keys(ref: str) -> set[str]:
    p = Path(ref)
    keys = {ref, p.name, ref.replace("/", "--")}
    if p.is_absolute() or ref.startswith("."):
        try:
            keys.add(str(p.resolve()))
        except OSError:
            pass
    return keys


def bind_references(
    refs: list[str], statement: ProvenanceStatement, local_dirs: dict[str, Path]
) -> tuple[dict[str, Path], list[str]]:
    """recipe reference -> verified local parent folder; and the reasons any reference could not be bound."""
    deps = [
        d
        for d in statement.predicate.buildDefinition.resolvedDependencies or []
        if (d.annotations or {}).get("role") in ROLES and (d.digest or {}).get("sha256")
    ]
    bound: dict[str, Path] = {}
    problems: list[str] = []
    for ref in refs:
        matches = [d for d in deps if _ref_keys(ref) & _dep_keys(d)]
        digests = {(d.digest or {})["sha256"] for d in matches}
        if len(digests) != 1:
            problems.append(f"recipe model {ref!r} matches {'no' if not digests else 'several'} recorded parents")
            continue
        digest = digests.pop()
        if digest not in local_dirs:
            problems.append(f"parent {ref!r} ({digest[:16]}) is not available locally (give --parents-dir)")
            continue
        bound[ref] = local_dirs[digest]
    return bound, problems


def replay_statement(
    candidate: Path, statement: ProvenanceStatement, local_dirs: dict[str, Path], device: str = "cpu"
) -> ReplayOutcome:
    """Recompute the merge a trusted statement describes and compare it with `candidate`, tensor by tensor."""
    build = statement.predicate.buildDefinition
    config = (build.externalParameters or {}).get("mergekit_config")
    if not isinstance(config, dict) or not isinstance(config.get("yaml"), str):
        return ReplayOutcome(False, "cannot_replay", "the merge statement records no mergekit recipe", [])
    text: str = config["yaml"]
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != config.get("sha256"):
        return ReplayOutcome(False, "cannot_replay", "the recorded recipe does not match its recorded sha256", [])
    from attest.merge import parse_recipe, replay_options
    from attest.replay import Verdict, replay

    try:
        recipe = parse_recipe(text, "recorded recipe")
        parents, problems = bind_references(recipe.referenced_models(), statement, local_dirs)
        if problems:
            return ReplayOutcome(False, "cannot_replay", "; ".join(problems), [])
        options = replay_options(build.internalParameters or {})
        report = replay(recipe, parents, candidate, device=device, **options)  # type: ignore[arg-type]
    except AttestError as exc:
        return ReplayOutcome(False, "cannot_replay", str(exc), [])
    ok = report.verdict in (Verdict.REPRODUCED, Verdict.REPRODUCED_WITHIN_TOLERANCE)
    return ReplayOutcome(ok, str(report.verdict), report.summary, list(report.mismatched))
