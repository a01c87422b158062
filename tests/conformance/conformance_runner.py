"""Load the conformance manifest and compare an implementation's outcome with each vector's expectation."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

from attest.conformance import Roots, Vector, VectorManifest

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE = REPO / "conformance"


def load_manifest(folder: Path = CONFORMANCE) -> VectorManifest:
    return VectorManifest.model_validate_json((folder / "vectors.json").read_bytes())


@dataclass
class Outcome:
    """What one implementation said about one vector."""

    verdict: str
    exit_code: int
    reason: str | None = None
    error: str | None = None
    message: str = ""
    roots: dict[str, Roots] = field(default_factory=dict)
    matched: str | None = None
    signers: list[str] | None = None
    key_names: list[str] | None = None
    trusted_roots: list[str] | None = None


def mismatches(vector: Vector, got: Outcome, *, check_reason: bool, check_attest: bool) -> list[str]:
    """Every way `got` differs from the vector's expectation (empty when it conforms)."""
    want = vector.expect
    out = []
    if got.verdict != want.verdict or got.exit_code != want.exit_code:
        out.append(f"{got.verdict}/{got.exit_code} ({got.error}: {got.message}), want {want.verdict}/{want.exit_code}")
        return out
    if want.verdict == "reject":
        if check_reason and got.reason != want.reason:
            out.append(f"reason {got.reason!r} ({got.message}), want {want.reason!r}")
        if check_attest and got.error != want.error:
            out.append(f"error class {got.error}, want {want.error}")
        if check_attest and want.message and want.message.lower() not in got.message.lower():
            out.append(f"message {got.message!r} lacks {want.message!r}")
        return out
    if want.roots is not None and got.roots != dict(want.roots):
        out.append(f"roots {got.roots}, want {want.roots}")
    if want.matched is not None and got.matched != want.matched:
        out.append(f"matched {got.matched}, want {want.matched}")
    if want.signers is not None and sorted(got.signers or []) != sorted(want.signers):
        out.append(f"signers {got.signers}, want {want.signers}")
    for name in ("key_names", "trusted_roots"):
        if getattr(want, name) is not None and getattr(got, name) != getattr(want, name):
            out.append(f"{name} {getattr(got, name)}, want {getattr(want, name)}")
    return out


def spec_vector_refs(spec_text: str) -> set[str]:
    """Vector ids (or glob patterns over them) that SPEC.md names in backquotes in a "Vectors: ..." paragraph."""
    refs: set[str] = set()
    for paragraph in re.findall(r"Vectors?(?: \([^)]*\))?:(.*?)(?:\n\s*\n|\n[#|]|\n\* |\n\d+\. |$)", spec_text, re.S):
        refs.update(re.findall(r"`((?:id|proof|env|stmt|bundle|policy)-[a-z0-9*.-]+)`", paragraph))
    return refs


def unreferenced(manifest: VectorManifest, refs: set[str]) -> list[str]:
    return [v.id for v in manifest.vectors if not any(fnmatch.fnmatchcase(v.id, r) for r in refs)]


def dangling(manifest: VectorManifest, refs: set[str]) -> list[str]:
    ids = [v.id for v in manifest.vectors]
    return sorted(r for r in refs if not fnmatch.filter(ids, r))
