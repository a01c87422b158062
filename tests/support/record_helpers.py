"""Helpers for the statement, signing and record tests: walk a chain from a folder alone, run the real mergekit."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attest.identity import hash_model
from attest.lineage.store import load_bundle
from attest.signing import PublicKey, verify_envelope
from attest.signing.verify import VerifiedStatement


def verify_chain(folder: Path, trusted: list[PublicKey]) -> list[VerifiedStatement]:
    """What a verifier does with nothing but the folder: the folder's own statement must be about its hashed root,
    and every model dependency must be the subject of another verified statement in the same bundle, or a leaf
    (a model without attestations, named by its hash). Returns the statements from the folder's own one down."""
    envelopes = load_bundle(folder)
    verified = [verify_envelope(e, trusted) for e in envelopes]
    by_subject = {d: v for v in verified for d in v.statement.subject_digests()}
    root = hash_model(folder).model_root
    assert root in by_subject, "no verified statement about the folder itself"
    chain, todo, seen = [], [root], set()
    while todo:
        digest = todo.pop()
        if digest in seen or digest not in by_subject:
            continue
        seen.add(digest)
        v = by_subject[digest]
        chain.append(v)
        for dep in v.statement.dependencies():
            role = (dep.annotations or {}).get("role")
            if role in ("base", "parent", "teacher", "student-init") and dep.digest:
                named = (dep.annotations or {}).get("statement")
                if named is not None:  # named by its attestation: that statement must be in the bundle
                    assert dep.digest["sha256"] in by_subject, f"parent {dep.name} statement missing"
                todo.append(dep.digest["sha256"])
    return chain


def mergekit_linear(parents: list[Path], out: Path, weights: list[float]) -> tuple[Path, Path]:
    """Run the real mergekit 0.1.5 CLI (linear merge on CPU); returns (output folder, config file)."""
    exe = Path(sys.executable).parent / "mergekit-yaml"
    if not exe.exists():
        found = shutil.which("mergekit-yaml")
        if found is None:
            pytest.skip("mergekit-yaml is not installed (a test dependency)")
        exe = Path(found)
    lines = ["merge_method: linear", "models:"]
    for p, w in zip(parents, weights, strict=True):
        lines += [f"  - model: {p}", "    parameters:", f"      weight: {w}"]
    lines += ["dtype: float32", "out_dtype: bfloat16", ""]
    config = out.parent / f"{out.name}.yml"
    config.write_text("\n".join(lines))
    subprocess.run(
        [str(exe), str(config), str(out), "--no-copy-tokenizer", "--no-cuda"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out, config
