"""Replay a recorded merge after verification: the recipe comes from the signed statement, each parent folder must
already have been re-hashed to the digest the statement names, and the candidate is the verified folder itself.

Recipe references are bound to recorded parents by attest.statements.recipe_parents (the rule `record merge` and
verification use too); anything ambiguous, missing or extra is reported, never guessed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from attest.errors import AttestError
from attest.executor import ClusterError, Executor
from attest.merge.engine import replay_options
from attest.replay.engine import replay
from attest.replay.report import Verdict
from attest.statements.models import ProvenanceStatement
from attest.statements.recipe import parse_recipe
from attest.statements.recipe_parents import match_recipe_parents


@dataclass
class ReplayOutcome:
    ok: bool
    verdict: str  # reproduced | reproduced_within_tolerance | not_reproduced | cannot_replay
    summary: str
    mismatched: list[str]


def bind_references(
    refs: list[str], statement: ProvenanceStatement, local_dirs: dict[str, Path]
) -> tuple[dict[str, Path], list[str]]:
    """recipe reference -> verified local parent folder; and the reasons any reference could not be bound (or a
    recorded parent that the recipe does not name)."""
    digests, problems = match_recipe_parents(refs, statement.predicate.buildDefinition.resolvedDependencies or [])
    bound: dict[str, Path] = {}
    for ref, digest in digests.items():
        if digest not in local_dirs:
            problems.append(f"parent {ref!r} ({digest[:16]}) is not available locally (give --parents-dir)")
            continue
        bound[ref] = local_dirs[digest]
    return bound, problems


def replay_statement(
    candidate: Path,
    statement: ProvenanceStatement,
    local_dirs: dict[str, Path],
    device: str = "cpu",
    executor: Executor | None = None,
) -> ReplayOutcome:
    """Recompute the merge a trusted statement describes and compare it with `candidate`, tensor by tensor."""
    build = statement.predicate.buildDefinition
    config = (build.externalParameters or {}).get("mergekit_config")
    if not isinstance(config, dict) or not isinstance(config.get("yaml"), str):
        return ReplayOutcome(False, "cannot_replay", "the merge statement records no mergekit recipe", [])
    text: str = config["yaml"]
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != config.get("sha256"):
        return ReplayOutcome(False, "cannot_replay", "the recorded recipe does not match its recorded sha256", [])
    try:
        recipe = parse_recipe(text, "recorded recipe")
        parents, problems = bind_references(recipe.referenced_models(), statement, local_dirs)
        if problems:
            return ReplayOutcome(False, "cannot_replay", "; ".join(problems), [])
        options = replay_options(build.internalParameters or {})
        report = replay(recipe, parents, candidate, device=device, executor=executor, **options)  # type: ignore[arg-type]
    except ClusterError:  # the cluster could not run it: no verdict either way
        raise
    except AttestError as exc:
        return ReplayOutcome(False, "cannot_replay", str(exc), [])
    ok = report.verdict in (Verdict.REPRODUCED, Verdict.REPRODUCED_WITHIN_TOLERANCE)
    return ReplayOutcome(ok, str(report.verdict), report.summary, list(report.mismatched))
