"""What verification yields: the verify report plus the statements it rests on, and the walks over that lineage.

Everything above verify (replay, the policy rules, cards, reports, BOMs) reads a `VerifiedLineage`; nothing here
checks anything, so a reader cannot mistake a lookup for a verification.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attest.lineage.locator import Locator
from attest.statements.models import ProvenanceStatement
from attest.verify.report import LineageNode, VerifyReport


@dataclass(frozen=True)
class StepRecord:
    """The statement about one model of the lineage as the verifier found it (for policies, cards, BOMs)."""

    digest: str
    statement: ProvenanceStatement
    signers: list[str]
    trusted: bool
    payload_digest: str = ""  # sha256 of the signed payload (the training replay's challenge)


@dataclass
class VerifiedLineage:
    """A verify report plus the statements it rests on, keyed by subject digest (trusted ones win)."""

    report: VerifyReport
    steps: dict[str, StepRecord]
    folder: Path
    locator: Locator = field(default_factory=Locator)
    """Finds local parents and remembers every folder this verification hashed, so that what runs on top (replay,
    detect, training replay) never hashes a folder twice."""
    trusted_statements: dict[str, set[str]] = field(default_factory=dict)
    """Subject digest -> payload sha256 of each statement about it that a trusted signer made."""
    training: dict[Any, Any] = field(default_factory=dict)
    """Training replay reports by (statement, segments, inputs), so the option and the rule replay once."""


def nodes(root: LineageNode) -> Iterator[LineageNode]:
    """Every node of the tree once per digest, root first (depth first)."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        n = todo.pop(0)
        if n.digest in seen:
            continue
        seen.add(n.digest)
        yield n
        todo[0:0] = n.parents


def head_step(steps: dict[str, StepRecord], model_root: str) -> tuple[StepRecord | None, bool]:
    """The statement a card is checked against: the one naming the folder's root, else (the folder changed after
    signing) the single statement no other one depends on. Returns (record, names the current root)."""
    if model_root in steps:
        return steps[model_root], True
    depended = {d.sha256 for rec in steps.values() for d in rec.statement.dependencies() if d.digest}
    heads = [rec for d, rec in steps.items() if d not in depended]
    return (heads[0], False) if len(heads) == 1 else (None, False)
