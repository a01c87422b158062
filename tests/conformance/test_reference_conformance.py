"""The independent reference verifier (tests/conformance/reference/, written from SPEC.md and schemas/, never importing
attest) against every conformance vector: it must reach each expected outcome, refusal reason included, so that it
and attest (tests/conformance/test_conformance.py) agree on every case."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conformance.reference import Refusal
from tests.conformance.reference.dsse import check_bundle, check_envelope, check_statement, load_public_key
from tests.conformance.reference.identity import roots
from tests.conformance.reference.policy import check_policy
from tests.conformance.reference.proofs import check_proof

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE = REPO / "conformance"
MANIFEST = json.loads((CONFORMANCE / "vectors.json").read_text())
VECTORS: list[dict[str, Any]] = MANIFEST["vectors"]
KEYS = {p.stem: load_public_key(p.read_bytes()) for p in sorted((CONFORMANCE / "keys").glob("*.pub"))}


def outcome(v: dict[str, Any]) -> dict[str, Any]:
    path = CONFORMANCE / v["path"]
    try:
        if v["kind"] == "identity":
            return {"verdict": "accept", "exit_code": 0, "roots": {a: roots(path, a) for a in ("sha256", "blake3")}}
        if v["kind"] == "proof":
            return {"verdict": "accept", "exit_code": 0, "matched": check_proof(path, v["root"], v.get("tree_size"))}
        if v["kind"] == "envelope":
            trusted = {k: KEYS[k] for k in v["keys"]}
            signers = check_envelope(path.read_bytes(), trusted, v.get("threshold") or 1, v.get("subject"))
            return {"verdict": "accept", "exit_code": 0, "signers": sorted(signers)}
        if v["kind"] == "policy":
            names, trusted_roots = check_policy(path)
            return {"verdict": "accept", "exit_code": 0, "key_names": names, "trusted_roots": trusted_roots}
        if v["kind"] == "statement":
            check_statement(path.read_bytes())
        else:
            check_bundle(path.read_bytes())
        return {"verdict": "accept", "exit_code": 0}
    except Refusal as exc:
        return {"verdict": "reject", "exit_code": exc.exit_code, "reason": exc.reason}


def expected(v: dict[str, Any]) -> dict[str, Any]:
    e = v["expect"]
    keep = ["verdict", "exit_code", "reason"] if e["verdict"] == "reject" else ["verdict", "exit_code"]
    want = {k: e[k] for k in keep}
    for k in ("roots", "matched", "key_names", "trusted_roots"):
        if k in e:
            want[k] = e[k]
    if "signers" in e:
        want["signers"] = sorted(e["signers"])
    return want


def test_manifest_matches_its_schema() -> None:
    jsonschema.validate(MANIFEST, json.loads((REPO / "schemas" / "conformance-vectors.schema.json").read_text()))


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_reference_agrees(vector: dict[str, Any]) -> None:
    assert outcome(vector) == expected(vector)


def test_reference_never_imports_attest() -> None:
    for source in sorted((REPO / "tests" / "conformance" / "reference").glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n == "attest" or n.startswith("attest.") for n in names), source


def test_reference_reproduces_the_worked_example(tmp_path: Path) -> None:
    """SPEC.md 1.8, the example tests/identity/test_spec_example.py started, through the full reference."""
    from tests.identity.test_spec_example import build_example, expected_values

    build_example(tmp_path / "m")
    want = expected_values()
    assert roots(tmp_path / "m", "sha256") == {
        "weights_root": want["weights root"],
        "files_root": want["files root"],
        "model_root": want["model root"],
    }
